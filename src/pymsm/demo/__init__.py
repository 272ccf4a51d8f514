"""`msm demo`: a local cluster in one command (memcached or Redis nodes, app nodes under
gunicorn, a load balancer in front) and the demo app showing sessions surviving node failures.

    from pymsm.demo import Demo, DemoConfig

    with Demo(DemoConfig(port=0, mode="sticky")) as demo:
        demo.url, demo.state()
        demo.kill("memcached", "n1"); demo.start_node("memcached", "n1")

See docs/demo.md.
"""

from pymsm.demo.config import BALANCERS, MODES, DemoConfig
from pymsm.demo.processes import DemoError
from pymsm.demo.supervisor import Demo

__all__ = ["BALANCERS", "MODES", "Demo", "DemoConfig", "DemoError"]
