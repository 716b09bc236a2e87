"""The strict environment helpers: a malformed value stops start-up instead of being guessed."""

import pytest

from querynox.env import ImproperlyConfiguredEnv, env_bool, env_int, env_list, env_str

NAME = "QUERYNOX_TEST_SETTING"


@pytest.fixture
def env(monkeypatch):
    monkeypatch.delenv(NAME, raising=False)

    def set_to(value):
        monkeypatch.setenv(NAME, value)

    return set_to


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("true", True),
        ("TRUE", True),
        (" yes ", True),
        ("1", True),
        ("on", True),
        ("false", False),
        ("False", False),
        ("no", False),
        ("0", False),
        ("off", False),
        ("", False),
    ],
)
def test_env_bool_accepts_the_usual_spellings(env, raw, expected):
    env(raw)

    assert env_bool(NAME, default=not expected) is expected


@pytest.mark.parametrize("raw", ["maybe", "2", "y", "enabled", "truee", "-1"])
def test_env_bool_rejects_anything_else(env, raw):
    env(raw)

    with pytest.raises(ImproperlyConfiguredEnv) as refused:
        env_bool(NAME)

    assert NAME in str(refused.value) and repr(raw) in str(refused.value)


@pytest.mark.parametrize("default", [True, False])
def test_env_bool_uses_the_default_when_unset(env, default):
    assert env_bool(NAME, default) is default


@pytest.mark.parametrize("raw,expected", [("42", 42), (" 7 ", 7), ("0", 0), ("-3", -3)])
def test_env_int_parses_integers(env, raw, expected):
    env(raw)

    assert env_int(NAME, 99) == expected


@pytest.mark.parametrize("raw", ["abc", "1.5", "12abc", "1e3", "ten"])
def test_env_int_rejects_non_integers(env, raw):
    env(raw)

    with pytest.raises(ImproperlyConfiguredEnv, match="is not an integer"):
        env_int(NAME, 5)


def test_env_int_rejects_values_below_the_minimum(env):
    env("9")

    with pytest.raises(ImproperlyConfiguredEnv, match="must be at least 10"):
        env_int(NAME, 20, minimum=10)


def test_env_int_accepts_the_minimum_itself(env):
    env("10")

    assert env_int(NAME, 20, minimum=10) == 10


@pytest.mark.parametrize("raw", [None, "", "   "])
def test_env_int_uses_the_default_when_unset_or_blank(env, raw):
    if raw is not None:
        env(raw)

    assert env_int(NAME, 250, minimum=10) == 250


def test_env_list_splits_on_commas_and_drops_blanks(env):
    env(" a.example , b.example,, ")

    assert env_list(NAME) == ["a.example", "b.example"]


def test_env_list_and_env_str_defaults(env):
    assert env_list(NAME, ["x"]) == ["x"]
    assert env_str(NAME, "fallback") == "fallback"
    env("set")
    assert env_str(NAME, "fallback") == "set"
