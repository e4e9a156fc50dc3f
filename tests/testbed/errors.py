class TestbedError(RuntimeError):
    """A test bed failure a person can act on: the message says what to do."""

    __test__ = False
