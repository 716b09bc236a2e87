"""History sent to the model fits its context window: newest whole turns first, the current prompt always."""

from core.tokens import answer_budget, estimate_tokens, fit_history


def turn(i, size=30):
    return ({"role": "user", "content": f"q{i} " + "x" * size}, {"role": "assistant", "content": f"a{i} " + "y" * size})


def test_everything_is_kept_when_it_fits():
    history = [turn(i) for i in range(3)]
    messages, dropped = fit_history([], history, {"role": "user", "content": "now"}, limit=10_000)
    assert dropped == 0
    assert [m["content"][:2] for m in messages] == ["q0", "a0", "q1", "a1", "q2", "a2", "no"]


def test_oldest_turns_are_dropped_first_and_never_half_a_turn():
    history = [turn(i, size=300) for i in range(10)]
    system = [{"role": "system", "content": "Be brief."}]
    messages, dropped = fit_history(system, history, {"role": "user", "content": "now"}, limit=500)

    assert messages[0] == system[0] and messages[-1]["content"] == "now"
    kept = messages[1:-1]
    assert len(kept) % 2 == 0 and 0 < len(kept) < 20 and dropped == 10 - len(kept) // 2
    assert kept[-1]["content"].startswith("a9")  # the newest turn survives
    assert sum(estimate_tokens(m["content"]) + 4 for m in messages) <= 500


def test_no_history_fits_but_the_prompt_still_goes():
    messages, dropped = fit_history([], [turn(0, size=3000)], {"role": "user", "content": "now"}, limit=50)
    assert messages == [{"role": "user", "content": "now"}] and dropped == 1


def test_token_estimate_is_conservative_for_non_ascii_text():
    assert estimate_tokens("Paris") == 2
    assert estimate_tokens("東京") == 2  # 6 UTF-8 bytes
    assert answer_budget(2048, 512) == 512 and answer_budget(1000, 512) == 250
