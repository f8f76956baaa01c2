//! Staffing from an interval's demand: Erlang C (M/M/N) and Erlang A (M/M/N+M).
//!
//! Notation of the reference: λ arrivals per second, AHT mean handle time in seconds, offered load
//! A = λ·AHT Erlangs, N agents, T the service-level threshold in seconds.

/// Offered load in Erlangs of `arrivals` contacts over `period_s` seconds with mean handle time
/// `aht_s`.
pub fn offered_load(arrivals: f64, period_s: f64, aht_s: f64) -> f64 {
    arrivals / period_s * aht_s
}

/// A positive, finite number (NaN is not).
fn positive(x: f64) -> bool {
    x.is_finite() && x > 0.0
}

/// Erlang C: probability that a contact waits, C(N, A). `None` unless N > A (the queue would
/// grow without bound).
pub fn erlang_c(n: u32, a: f64) -> Option<f64> {
    if !positive(a) || f64::from(n) <= a {
        return None;
    }
    // Erlang B by its stable recursion, then C from B.
    let mut b = 1.0;
    for k in 1..=n {
        b = a * b / (f64::from(k) + a * b);
    }
    let n = f64::from(n);
    Some(n * b / (n - a * (1.0 - b)))
}

/// Service level: share of contacts answered within `t_s`, 1 − C·exp(−(N − A)·T / AHT).
pub fn service_level(n: u32, a: f64, aht_s: f64, t_s: f64) -> Option<f64> {
    let c = erlang_c(n, a)?;
    Some(1.0 - c * (-(f64::from(n) - a) * t_s / aht_s).exp())
}

/// Average speed of answer in seconds, C·AHT / (N − A).
pub fn asa(n: u32, a: f64, aht_s: f64) -> Option<f64> {
    let c = erlang_c(n, a)?;
    Some(c * aht_s / (f64::from(n) - a))
}

/// The smallest N > A whose service level within `t_s` reaches `target`. `None` when there is no
/// load (no agent needed) or the search passes 100,000 agents.
pub fn required_agents(a: f64, aht_s: f64, t_s: f64, target: f64) -> Option<u32> {
    if !positive(a) || !positive(aht_s) {
        return None;
    }
    let first = a.floor() as u32 + 1;
    (first..first.saturating_add(100_000))
        .find(|&n| service_level(n, a, aht_s, t_s).is_some_and(|sl| sl >= target))
}

/// Scheduled staff for `agents` on the phones: ⌈N / (1 − shrinkage)⌉.
pub fn scheduled_staff(agents: u32, shrinkage: f64) -> u32 {
    // the epsilon keeps exact quotients (14 / 0.7 = 20) from rounding up to the next integer
    (f64::from(agents) / (1.0 - shrinkage) - 1e-9).ceil() as u32
}

/// Erlang A (M/M/N+M): probability that a contact abandons, θ·E[Q]/λ, for arrival rate `lambda`
/// (per second), mean handle time `aht_s` and mean patience `patience_s` (θ = 1/patience).
/// The birth-death chain is summed until its terms vanish.
pub fn erlang_a_abandon(n: u32, lambda: f64, aht_s: f64, patience_s: f64) -> Option<f64> {
    if !positive(lambda) || !positive(aht_s) || !positive(patience_s) || n == 0 {
        return None;
    }
    let mu = 1.0 / aht_s;
    let theta = 1.0 / patience_s;
    // π_k relative to π_0, accumulated in log space would be safer for huge N; for staffing
    // sizes (N ≤ a few thousand) rescaling on overflow keeps it exact enough.
    let mut term = 1.0f64;
    let mut total = 1.0f64;
    let mut queue = 0.0f64;
    let mut k: u64 = 0;
    loop {
        k += 1;
        let death =
            (k.min(u64::from(n)) as f64) * mu + (k.saturating_sub(u64::from(n)) as f64) * theta;
        term *= lambda / death;
        total += term;
        if k > u64::from(n) {
            queue += (k - u64::from(n)) as f64 * term;
        }
        if total > 1e250 {
            term /= 1e200;
            total /= 1e200;
            queue /= 1e200;
        }
        if k > u64::from(n) && term < total * 1e-17 {
            break;
        }
        if k > 10_000_000 {
            return None;
        }
    }
    Some(theta * (queue / total) / lambda)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Rounds to `digits` decimals, as the reference prints its vectors.
    fn round(x: f64, digits: i32) -> f64 {
        let p = 10f64.powi(digits);
        (x * p).round() / p
    }

    // Reference vectors: 100 calls per 30 minutes, AHT 180 s, T = 20 s, so A = 10.
    const AHT: f64 = 180.0;

    #[test]
    fn offered_load_of_the_reference() {
        assert_eq!(offered_load(100.0, 1800.0, AHT), 10.0);
    }

    #[test]
    fn erlang_c_reproduces_the_reference_vectors() {
        let a = 10.0;
        assert_eq!(round(erlang_c(14, a).unwrap(), 7), 0.1741319);
        assert_eq!(round(erlang_c(13, a).unwrap(), 7), 0.2852705);
        for (n, sl) in [
            (14, 0.8883500),
            (13, 0.7955948),
            (12, 0.6401580),
            (11, 0.3896138),
        ] {
            assert_eq!(
                round(service_level(n, a, AHT, 20.0).unwrap(), 7),
                sl,
                "N={n}"
            );
        }
        assert_eq!(round(asa(14, a, AHT).unwrap(), 4), 7.8359);
        assert_eq!(round(asa(13, a, AHT).unwrap(), 2), 17.12);
        assert_eq!(round(asa(12, a, AHT).unwrap(), 2), 40.44);
        assert_eq!(round(asa(11, a, AHT).unwrap(), 2), 122.78);
        assert_eq!(erlang_c(10, a), None, "N must exceed A");
    }

    #[test]
    fn required_agents_and_shrinkage() {
        let n = required_agents(10.0, AHT, 20.0, 0.8).unwrap();
        assert_eq!(n, 14);
        assert_eq!(scheduled_staff(n, 0.3), 20);
        assert_eq!(scheduled_staff(14, 0.0), 14);
        assert_eq!(required_agents(0.0, AHT, 20.0, 0.8), None);
    }

    #[test]
    fn erlang_a_reproduces_the_reference_vectors() {
        let lambda = 100.0 / 1800.0;
        assert_eq!(
            round(erlang_a_abandon(10, lambda, AHT, 300.0).unwrap(), 5),
            0.10944
        );
        assert_eq!(
            round(erlang_a_abandon(12, lambda, AHT, 300.0).unwrap(), 5),
            0.04271
        );
        assert_eq!(
            round(erlang_a_abandon(14, lambda, AHT, 300.0).unwrap(), 5),
            0.01398
        );
    }

    #[test]
    fn erlang_a_tends_to_erlang_c_as_patience_grows() {
        // with infinite patience nobody abandons, and the waiting probability is C(N, A): the
        // abandon probability θ·E[Q]/λ vanishes while θ·E[Q]/θ = E[Q] tends to Erlang C's queue.
        let lambda = 100.0 / 1800.0;
        let p = 1e9;
        let ab = erlang_a_abandon(14, lambda, AHT, p).unwrap();
        let lq_a = ab * lambda * p; // E[Q]
        let lq_c = erlang_c(14, 10.0).unwrap() * 10.0 / (14.0 - 10.0); // C·A/(N−A)
        assert!((lq_a - lq_c).abs() < 1e-4 * lq_c, "{lq_a} vs {lq_c}");
    }

    proptest! {
        #[test]
        fn more_agents_never_serve_worse(a in 0.5f64..200.0, extra in 1u32..20) {
            let n = a.floor() as u32 + 1;
            let sl1 = service_level(n, a, AHT, 20.0).unwrap();
            let sl2 = service_level(n + extra, a, AHT, 20.0).unwrap();
            prop_assert!(sl2 >= sl1 - 1e-12);
            prop_assert!((0.0..=1.0).contains(&erlang_c(n, a).unwrap()));
            let r = required_agents(a, AHT, 20.0, 0.8).unwrap();
            prop_assert!(service_level(r, a, AHT, 20.0).unwrap() >= 0.8);
            prop_assert!(r == n || service_level(r - 1, a, AHT, 20.0).unwrap() < 0.8);
        }
    }
}
