"""Operations tooling behind the `msm` command: inspection of nodes and sessions (I/O, not core)."""
