"""The send-rate rules, on a fake clock."""

from smpp.flow import AdaptiveRate, RateMeter, SubmitRefusals, TokenBucket


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
    rate.throttled()
    assert rate.rate == 100
    rate.throttled()  # within the same interval: once is enough
    assert rate.rate == 100 and rate.throttled_count == 2
    for _ in range(30):
        clock.now += 1.0
        rate.tick()
    assert rate.rate == 200


def test_throttling_an_unlimited_rate_halves_the_rate_measured_over_the_last_second():
    clock = Clock()
    rate = AdaptiveRate(None, clock=clock)
    for _ in range(10):  # 1,000 a second, in batches of 100
        clock.now += 0.1
        rate.sent.add(100)
    rate.throttled()
    assert rate.rate == 500


def test_a_burst_after_idle_past_the_smscs_limit_halves_the_burst_not_the_idle_average():
    """Idle for a minute, then a burst the SMSC throttles past 50 a second: the rate
    falls to half of what the burst sent (was: half the idle average, the 1/s floor)."""
    clock = Clock()
    rate = AdaptiveRate(None, clock=clock)
    clock.now = 60.0  # a minute of nothing
    assert rate.sent.rate() == 0
    for _ in range(2):  # the burst: 200 submits in 20 ms, then the first 0x58 comes back
        clock.now += 0.01
        rate.sent.add(100)
    rate.throttled()
    assert rate.rate == 100
    clock.now += 0.01
    rate.throttled()  # the rest of the burst's answers: the same news, no second cut
    assert rate.rate == 100 and rate.throttled_count == 2
    # A second later, still over the SMSC's 50: halved once more, near its limit.
    for _ in range(10):
        clock.now += 0.1
        rate.sent.add(10)
    rate.throttled()
    assert rate.rate == 50


def test_the_rate_meter_forgets_what_is_older_than_its_span():
    clock = Clock()
    meter = RateMeter(clock=clock)
    meter.add(100)
    clock.now = 0.5
    assert meter.rate() == 100
    clock.now = 1.5  # half of the first window still counts
    assert meter.rate() == 50
    meter.add(20)
    assert meter.rate() == 70
    clock.now = 2.2  # the window of the 20 is over: it still counts as the recent peak
    assert round(meter.rate(), 6) == 16 and meter.recent_peak() == 20
    clock.now = 10.0
    assert meter.rate() == 0 and meter.recent_peak() == 0


def test_refusals_are_counted_summarised_at_most_once_an_interval_and_timed():
    clock = Clock()
    refusals = SubmitRefusals(stall_after=60, clock=clock)
    clock.now = 100.0
    for _ in range(67):
        refusals.refused(0x58)
    refusals.refused(None)  # no answer in time
    first = refusals.take_summary(every=10)
    assert first is not None and first.counts == {0x58: 67, None: 1}
    clock.now = 105.0
    refusals.refused(0x14)
    assert refusals.take_summary(every=10) is None  # rate-limited
    clock.now = 110.0
    second = refusals.take_summary(every=10)
    assert second.counts == {0x14: 1} and second.seconds == 5.0
    assert refusals.total(0x58) == 67 and refusals.total(0x58, 0x14, None) == 69
    assert refusals.take_summary(every=10) is None  # nothing new


def test_a_session_refusing_every_submit_for_the_stall_time_is_stalled():
    clock = Clock()
    refusals = SubmitRefusals(stall_after=60, clock=clock)
    for second in range(0, 70, 10):
        clock.now = float(second)
        refusals.refused(0x14)
    clock.now = 61.0
    assert refusals.stalled() and refusals.refusing_for() == 61.0
    assert refusals.last_status == 0x14
    refusals.accepted()  # one went through: not stalled
    assert not refusals.stalled() and refusals.refusing_for() == 0
    for second in range(70, 140, 10):
        clock.now = float(second)
        refusals.refused(0x14)
    assert refusals.stalled()
    refusals.new_session()  # a new bind gets its own chance
    assert not refusals.stalled()


def test_an_idle_spell_after_a_refusal_is_no_evidence_of_a_stall_until_the_next_refusal():
    clock = Clock()
    refusals = SubmitRefusals(stall_after=60, clock=clock)
    refusals.refused(0x14)
    clock.now = 200.0  # nothing sent since
    assert refusals.refusing_for() == 200.0 and not refusals.stalled()
    refusals.refused(0x14)  # refused again, nothing accepted between: 200 s of refusals
    assert refusals.stalled()


def test_no_stall_watch_when_switched_off():
    clock = Clock()
    refusals = SubmitRefusals(stall_after=0, clock=clock)
    refusals.refused(0x14)
    clock.now = 1000.0
    refusals.refused(0x14)
    assert not refusals.stalled()


def test_a_throttle_answered_late_still_halves_what_was_sent():
    """An SMSC that answers a second or more late: the burst it throttles is in the
    previous window, not the current one, and still counts."""
    clock = Clock()
    rate = AdaptiveRate(None, clock=clock)
    clock.now = 30.0
    rate.sent.add(400)  # the burst
    clock.now = 31.9  # its first answer, 1.9 s later, nothing sent since
    rate.throttled()
    assert rate.rate == 200
