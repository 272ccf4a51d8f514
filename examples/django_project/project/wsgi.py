"""Django with pymsm sessions: `request.session` as usual, stored in memcached.

Run (two memcached nodes on 11211 and 11212, two gunicorn workers sharing the sessions):

    MSM_MEMCACHED_NODES=n1:127.0.0.1:11211,n2:127.0.0.1:11212 gunicorn -w 2 --chdir examples/django_project project.wsgi
"""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
application = get_wsgi_application()
