"""The unit layer: each module on its own, in milliseconds, with no luigi run and no
subprocess. ``make test-fast`` runs it with the other tests not marked ``e2e``."""
