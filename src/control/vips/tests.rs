use super::*;
use crate::control::store::Store;

const Q: u64 = 600;

fn range(s: &str) -> VipRange {
    s.parse().unwrap()
}

fn keys(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Runs `plan` and applies its writes to `table`, as the store does.
fn step(table: &mut BTreeMap<String, VipEntry>, wanted: &[&str], now: u64, r: VipRange) -> VipPlan {
    let p = plan(table, &keys(wanted), now, Q, r);
    for (k, w) in &p.writes {
        match w {
            Some(e) => {
                table.insert(k.clone(), *e);
            }
            None => {
                table.remove(k);
            }
        }
    }
    p
}

#[test]
fn a_released_vip_is_quarantined_then_returns_to_the_pool() {
    let r = range("127.10.0.0/30"); // .1 and .2 usable
    let mut t = BTreeMap::new();
    let p = step(&mut t, &["a.x", "b.x"], 0, r);
    assert_eq!(p.assigned["a.x"], ip("127.10.0.1"));
    assert_eq!(p.assigned["b.x"], ip("127.10.0.2"));

    // a.x goes away: its VIP is quarantined, not handed to c.x.
    let p = step(&mut t, &["b.x", "c.x"], 10, r);
    assert_eq!(
        p.exhausted,
        ["c.x"],
        "the range is full while a.x is quarantined"
    );
    assert_eq!(t["a.x"].released_at, Some(10));

    // a.x comes back within the quarantine: the same VIP.
    let p = step(&mut t, &["a.x", "b.x"], 300, r);
    assert_eq!(p.assigned["a.x"], ip("127.10.0.1"));
    assert_eq!(t["a.x"].released_at, None);

    // Gone again, and past the quarantine: now c.x may have it.
    step(&mut t, &["b.x"], 400, r);
    let p = step(&mut t, &["b.x", "c.x"], 400 + Q - 1, r);
    assert_eq!(p.exhausted, ["c.x"], "one second short of the quarantine");
    let p = step(&mut t, &["b.x", "c.x"], 400 + Q, r);
    assert!(!t.contains_key("a.x"));
    assert_eq!(p.assigned["c.x"], ip("127.10.0.1"));
}

#[test]
fn nothing_is_written_when_nothing_changed_and_range_changes_reallocate() {
    let mut t = BTreeMap::new();
    step(&mut t, &["a.x"], 0, range("127.10.0.0/24"));
    let p = plan(&t, &keys(&["a.x"]), 5, Q, range("127.10.0.0/24"));
    assert!(p.writes.is_empty());
    let p = step(&mut t, &["a.x"], 5, range("127.20.0.0/24"));
    assert_eq!(
        p.assigned["a.x"],
        ip("127.20.0.1"),
        "moved into the new range"
    );
}

#[test]
fn store_applies_a_plan_in_one_transaction_and_reads_old_rows() {
    let dir = tempfile::tempdir().unwrap();
    let r = range("127.10.0.0/24");
    let kafka: EndpointKey = (
        "kafka.data".parse().unwrap(),
        "west".parse().unwrap(),
        "kafka-0".parse().unwrap(),
    );
    let wanted: BTreeSet<String> = [
        service_key(&"kafka.data".parse().unwrap()),
        endpoint_key(&kafka),
    ]
    .into();
    let first = {
        let store = Store::open(dir.path()).unwrap();
        store.sync_vips(|t| plan(t, &wanted, 0, Q, r)).unwrap()
    };
    assert_eq!(first.writes.len(), 2);
    let store = Store::open(dir.path()).unwrap();
    let again = store.sync_vips(|t| plan(t, &wanted, 1, Q, r)).unwrap();
    assert_eq!(again.assigned, first.assigned, "stable across a reopen");
    assert!(again.writes.is_empty());
    let (services, endpoints) = split(&again.assigned);
    assert_eq!(services.len(), 1);
    assert_eq!(endpoints.len(), 1);
    assert_ne!(
        services.values().next(),
        endpoints.values().next(),
        "one pool"
    );
    assert!(parse_endpoint_key("kafka.data").is_none());
    assert_eq!(parse_endpoint_key(&endpoint_key(&kafka)), Some(kafka));
}
