"""The send-rate rules, on a fake clock."""

from smpp_gateway.flow import AdaptiveRate, TokenBucket


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_unlimited_bucket_grants_everything():
    assert TokenBucket(None).take(10_000) == 10_000


def test_bucket_never_exceeds_its_rate_over_a_second():
    clock = Clock()
    bucket = TokenBucket(100, clock=clock)
    sent = 0
    for _ in range(1000):  # one second in 1 ms steps
        clock.now += 0.001
        sent += bucket.take(50)
    assert 95 <= sent <= 100 + bucket.burst


def test_tokens_not_used_can_be_given_back():
    clock = Clock()
    bucket = TokenBucket(100, burst=10, clock=clock)
    assert bucket.take(10) == 10 and bucket.take(1) == 0
    bucket.give_back(4)
    assert bucket.take(10) == 4
    assert 0 < bucket.wait_time() <= 0.01


def test_throttling_halves_then_recovers_up_to_max():
    clock = Clock()
    rate = AdaptiveRate(200, clock=clock)
    clock.now = 5
    rate.throttled(observed_rate=180)
    assert rate.rate == 100
    rate.throttled(observed_rate=180)  # within the same interval: once is enough
    assert rate.rate == 100 and rate.throttled_count == 2
    for _ in range(30):
        clock.now += 1.0
        rate.tick()
    assert rate.rate == 200


def test_throttling_an_unlimited_rate_uses_the_observed_rate():
    clock = Clock()
    rate = AdaptiveRate(None, clock=clock)
    clock.now = 5
    rate.throttled(observed_rate=1000)
    assert rate.rate == 500
