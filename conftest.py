# pytest wiring only: the fixtures live in testsupport (tests import helpers from testsupport, never from here).
pytest_plugins = ["testsupport.fixtures"]
