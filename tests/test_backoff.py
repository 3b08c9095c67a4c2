import random

from flushwatch.backoff import jittered_exponential


def test_backoff_grows_to_the_cap_within_its_upper_half() -> None:
    delay = jittered_exponential(0.5, 30.0, rng=random.Random(7))
    for attempt in range(1, 13):
        nominal = min(30.0, 0.5 * 2 ** (attempt - 1))
        draws = [delay(attempt) for _ in range(50)]
        assert all(nominal / 2 <= d <= nominal for d in draws)
        assert len(set(draws)) > 1  # jittered, not a fixed schedule


def test_backoff_survives_days_of_failures() -> None:
    delay = jittered_exponential(0.5, 60.0, rng=random.Random(1))
    assert 30.0 <= delay(10_000) <= 60.0
    assert 0.25 <= delay(0) <= 0.5
