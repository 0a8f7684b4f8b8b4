//! Target selection: weighted round robin (smooth, as nginx interleaves it), weighted random,
//! least requests (fewest in flight per unit of weight), and consistent hashing on a key such as
//! the client address (ketama, so a target change remaps few clients). Every policy only returns
//! targets the caller accepts (healthy, circuit closed, not yet tried by this request).

use pingora_ketama::{Bucket, Continuum};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Debug)]
pub enum Balancer {
    RoundRobin {
        slots: Vec<usize>,
        next: AtomicUsize,
    },
    Random {
        slots: Vec<usize>,
    },
    Hash {
        ring: HashRing,
    },
    LeastRequests {
        weights: Vec<u32>,
    },
}

pub struct HashRing {
    continuum: Continuum,
    index_of: HashMap<SocketAddr, usize>,
    /// Upper bound of points on the ring (ketama puts 160 per unit of weight): a full walk.
    points: usize,
}

impl std::fmt::Debug for HashRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HashRing")
            .field("targets", &self.index_of.len())
            .finish()
    }
}

impl Balancer {
    pub fn round_robin(weights: &[u32]) -> Balancer {
        Balancer::RoundRobin {
            slots: smooth_weighted_order(weights),
            next: AtomicUsize::new(0),
        }
    }

    pub fn random(weights: &[u32]) -> Balancer {
        Balancer::Random {
            slots: smooth_weighted_order(weights),
        }
    }

    pub fn least_requests(weights: &[u32]) -> Balancer {
        Balancer::LeastRequests {
            weights: weights.to_vec(),
        }
    }

    pub fn hash(addrs: &[SocketAddr], weights: &[u32]) -> Balancer {
        let buckets: Vec<Bucket> = addrs
            .iter()
            .zip(weights)
            .map(|(a, w)| Bucket::new(*a, *w))
            .collect();
        let index_of = addrs.iter().enumerate().map(|(i, a)| (*a, i)).collect();
        let points = weights.iter().map(|w| *w as usize * 160).sum();
        Balancer::Hash {
            ring: HashRing {
                continuum: Continuum::new(&buckets),
                index_of,
                points,
            },
        }
    }

    /// Picks a target index that `accept` agrees to, or `None` if there is none. `key` feeds the
    /// hash policy (client address or header value); `load` gives a target's requests in flight
    /// for least-requests; `advance` moves the round-robin position (first attempts only).
    pub fn select(
        &self,
        key: &[u8],
        accept: &dyn Fn(usize) -> bool,
        load: &dyn Fn(usize) -> usize,
        advance: bool,
    ) -> Option<usize> {
        match self {
            Balancer::RoundRobin { slots, next } => {
                let start = if advance {
                    next.fetch_add(1, Ordering::Relaxed)
                } else {
                    next.load(Ordering::Relaxed)
                };
                let n = slots.len();
                let skipped = (0..n).position(|i| accept(slots[(start + i) % n]))?;
                if advance && skipped > 0 {
                    // The refused slots' turns are used up with this one: otherwise the target
                    // after a refused one would take its turns as well as its own (two thirds
                    // of the traffic with one of three targets down, not a half).
                    next.fetch_add(skipped, Ordering::Relaxed);
                }
                Some(slots[(start + skipped) % n])
            }
            Balancer::Random { slots } => {
                let first = *slots.get(fastrand::usize(..slots.len().max(1)))?;
                if accept(first) {
                    return Some(first);
                }
                // A uniform pick among the accepted slots (reservoir sampling), so that each
                // target left keeps its share by weight. Together with the first draw the
                // chance of a target is its weight over the accepted weight.
                let mut chosen = None;
                for (seen, &t) in slots.iter().filter(|&&t| accept(t)).enumerate() {
                    // The (seen+1)-th accepted slot replaces the choice with chance 1/(seen+1).
                    if fastrand::usize(..=seen) == 0 {
                        chosen = Some(t);
                    }
                }
                chosen
            }
            Balancer::LeastRequests { weights } => {
                // Scan from a random start so ties spread instead of piling on target 0.
                let n = weights.len();
                let start = fastrand::usize(..n.max(1));
                (0..n)
                    .map(|i| (start + i) % n)
                    .filter(|&i| accept(i))
                    .min_by(|&a, &b| {
                        // load/weight compared without division: a_load * b_w vs b_load * a_w.
                        let la = load(a) as u64 * u64::from(weights[b]);
                        let lb = load(b) as u64 * u64::from(weights[a]);
                        la.cmp(&lb)
                    })
            }
            Balancer::Hash { ring } => {
                let mut idx = ring.continuum.node_idx(key);
                // Walk the ring from the key's point: the next distinct target is the consistent
                // second choice.
                for _ in 0..ring.points {
                    let addr = ring.continuum.get_addr(&mut idx)?;
                    match ring.index_of.get(addr) {
                        Some(i) if accept(*i) => return Some(*i),
                        _ => {}
                    }
                }
                None
            }
        }
    }
}

/// nginx's smooth weighted round robin, unrolled into one cycle: weights 5,1,1 give
/// a a b a c a a rather than a a a a a b c. Weights are reduced by their gcd first.
fn smooth_weighted_order(weights: &[u32]) -> Vec<usize> {
    let g = weights.iter().copied().fold(0, gcd).max(1);
    let w: Vec<i64> = weights.iter().map(|w| i64::from(w / g)).collect();
    let total: i64 = w.iter().sum();
    let mut current = vec![0i64; w.len()];
    let mut order = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for i in 0..w.len() {
            current[i] += w[i];
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        order.push(best);
    }
    order
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smooth_order_interleaves_and_honours_weights() {
        assert_eq!(smooth_weighted_order(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(smooth_weighted_order(&[2, 2]), vec![0, 1]);
        assert_eq!(smooth_weighted_order(&[3]), vec![0]);
    }

    fn untried(tried: &[usize]) -> impl Fn(usize) -> bool + '_ {
        move |i| !tried.contains(&i)
    }

    fn no_load(_: usize) -> usize {
        0
    }

    #[test]
    fn round_robin_cycles_and_skips_tried() {
        let b = Balancer::round_robin(&[1, 1, 1]);
        let picks: Vec<_> = (0..6)
            .map(|_| b.select(b"", &untried(&[]), &no_load, true).unwrap())
            .collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
        for _ in 0..6 {
            assert_ne!(b.select(b"", &untried(&[1]), &no_load, true), Some(1));
        }
        assert_eq!(b.select(b"", &untried(&[0, 1, 2]), &no_load, true), None);
    }

    #[test]
    fn random_respects_weights_roughly() {
        let b = Balancer::random(&[9, 1]);
        let zeros = (0..2000)
            .filter(|_| b.select(b"", &untried(&[]), &no_load, true) == Some(0))
            .count();
        assert!(zeros > 1600, "{zeros}");
        assert_eq!(b.select(b"", &untried(&[0]), &no_load, true), Some(1));
    }

    /// How many of `picks` first attempts each of `targets` targets gets while `down` are
    /// refused (unhealthy, circuit open).
    fn spread(b: &Balancer, targets: usize, down: &[usize], picks: usize) -> Vec<usize> {
        let mut counts = vec![0; targets];
        for _ in 0..picks {
            counts[b.select(b"", &untried(down), &no_load, true).unwrap()] += 1;
        }
        counts
    }

    #[test]
    fn a_refused_target_s_turns_spread_over_the_others() {
        // Not all to the target after it: with the middle of three down, the other two get
        // half each (as nginx's round robin does), not a third and two thirds.
        let rr = Balancer::round_robin(&[1, 1, 1]);
        assert_eq!(spread(&rr, 3, &[1], 90), vec![45, 0, 45]);
        let rr = Balancer::round_robin(&[1, 1, 1, 1]);
        assert_eq!(spread(&rr, 4, &[1, 2], 100), vec![50, 0, 0, 50]);
        let random = Balancer::random(&[1, 1, 1]);
        let counts = spread(&random, 3, &[1], 6000);
        assert_eq!(counts[1], 0);
        assert!((2600..=3400).contains(&counts[2]), "{counts:?}");
    }

    #[test]
    fn least_requests_prefers_the_least_loaded_per_weight() {
        let b = Balancer::least_requests(&[1, 1, 2]);
        let loads = [3usize, 1, 3];
        let load = |i: usize| loads[i];
        // 3/1, 1/1, 3/2: target 1 has the least load per unit of weight.
        assert_eq!(b.select(b"", &untried(&[]), &load, true), Some(1));
        // Without 1: target 2 (1.5 per weight) beats target 0 (3).
        assert_eq!(b.select(b"", &untried(&[1]), &load, true), Some(2));
        assert_eq!(b.select(b"", &untried(&[0, 1, 2]), &load, true), None);
    }

    #[test]
    fn hash_is_sticky_per_key_and_falls_over() {
        let addrs: Vec<SocketAddr> = (1..=3)
            .map(|p| format!("127.0.0.1:{p}").parse().unwrap())
            .collect();
        let b = Balancer::hash(&addrs, &[1, 1, 1]);
        let key = [10u8, 1, 2, 3];
        let first = b.select(&key, &untried(&[]), &no_load, true).unwrap();
        for _ in 0..10 {
            assert_eq!(b.select(&key, &untried(&[]), &no_load, true), Some(first));
        }
        let second = b.select(&key, &untried(&[first]), &no_load, true).unwrap();
        assert_ne!(second, first);
        // Different keys spread over the targets.
        let spread: std::collections::HashSet<_> = (0..200u8)
            .map(|i| {
                b.select(&[10, 0, i, 1], &untried(&[]), &no_load, true)
                    .unwrap()
            })
            .collect();
        assert_eq!(spread.len(), 3);
        assert_eq!(b.select(&key, &untried(&[0, 1, 2]), &no_load, true), None);
    }
}
