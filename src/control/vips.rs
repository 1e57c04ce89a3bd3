//! VIP allocation for the snapshot: one stable VIP per service and one per endpoint of a
//! headless service, all from `control.vip_range`, all persisted in the store.
//!
//! Runs inside every republish, before `build_snapshot`; it must not decide routing or
//! visibility: which endpoints exist comes from `ferry_federation::endpoint_keys`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ferry_federation::{
    endpoint_keys, ClusterId, EndpointKey, ExportedService, LinkRecord, LocalService, ServiceName,
};

use super::store::{Store, StoreError};
use crate::config::VipRange;

/// What the VIPs are allocated for: the same values `build_snapshot` gets.
pub struct VipInputs<'a> {
    pub cluster: &'a ClusterId,
    pub local: &'a [LocalService],
    pub imports: &'a BTreeMap<ClusterId, Vec<ExportedService>>,
    pub links: &'a [LinkRecord],
}

/// Returns a VIP for every local service and every service imported from a linked peer,
/// allocating missing ones. Service VIPs are kept for good, so a name always answers with
/// the same address.
pub fn service_vips(
    store: &Store,
    range: VipRange,
    inputs: &VipInputs<'_>,
) -> Result<BTreeMap<ServiceName, IpAddr>, StoreError> {
    let mut vips = store.vips()?;
    let names = inputs.local.iter().map(|s| s.spec.name.clone()).chain(
        inputs
            .imports
            .iter()
            .filter(|(peer, _)| inputs.links.iter().any(|l| &l.peer == *peer))
            .flat_map(|(_, list)| list.iter().map(|s| s.name.clone())),
    );
    for name in names {
        if let std::collections::btree_map::Entry::Vacant(slot) = vips.entry(name) {
            let ip = store.allocate_vip(slot.key(), range)?;
            slot.insert(ip);
        }
    }
    Ok(vips)
}

/// Returns a VIP for every endpoint of a headless service the snapshot will show,
/// allocating missing ones and releasing stored ones whose endpoint is known to be gone.
///
/// Endpoint VIPs stay stable across restarts, link flaps and lease expiries, like service
/// VIPs, so clients that cache a broker's address (Kafka does) keep working. Unlike service
/// VIPs they are released, because endpoints churn (every new pod IP is a new default
/// hostname) and would otherwise drain the range. A VIP is released only on word that its
/// endpoint is gone, never on silence:
/// - a local endpoint: when the local spec no longer has it (or is no longer headless);
/// - a peer's endpoint: when the link to the peer is removed, or when the peer's current
///   exports (it is reporting) no longer list it. A peer whose imports were withdrawn (lease
///   expired, gateway restarting) keeps its endpoints' VIPs until it reports again.
///
/// When the range is exhausted, the endpoints left without a VIP are logged and left out of
/// the snapshot; service VIPs and the rest of the snapshot are unaffected.
pub fn endpoint_vips(
    store: &Store,
    range: VipRange,
    inputs: &VipInputs<'_>,
) -> Result<BTreeMap<EndpointKey, IpAddr>, StoreError> {
    let wanted = endpoint_keys(inputs.cluster, inputs.local, inputs.imports, inputs.links);
    let mut vips = store.endpoint_vips()?;
    let gone: Vec<EndpointKey> = vips
        .keys()
        .filter(|k| !wanted.contains(*k) && known_gone(k, inputs))
        .cloned()
        .collect();
    for key in gone {
        store.release_endpoint_vip(&key)?;
        vips.remove(&key);
        tracing::debug!(service = %key.0, cluster = %key.1, endpoint = %key.2, "endpoint VIP released");
    }
    // Kept VIPs of endpoints not shown now stay in the store, not in the answer.
    vips.retain(|k, _| wanted.contains(k));
    let mut unallocated = BTreeSet::new();
    for key in wanted {
        if vips.contains_key(&key) {
            continue;
        }
        match store.allocate_endpoint_vip(&key, range) {
            Ok(ip) => {
                vips.insert(key, ip);
            }
            Err(StoreError::VipsExhausted(_)) => {
                unallocated.insert(key);
            }
            Err(e) => return Err(e),
        }
    }
    if let Some((service, cluster, endpoint)) = unallocated.first() {
        tracing::warn!(
            count = unallocated.len(), %service, %cluster, %endpoint, %range,
            "VIP range exhausted: endpoints left out of the snapshot; widen control.vip_range"
        );
    }
    Ok(vips)
}

/// Whether an endpoint that is not wanted now is known to be gone, as opposed to merely
/// unheard of (see [`endpoint_vips`]).
fn known_gone((_, cluster, _): &EndpointKey, inputs: &VipInputs<'_>) -> bool {
    cluster == inputs.cluster
        || !inputs.links.iter().any(|l| &l.peer == cluster)
        || inputs.imports.contains_key(cluster)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_federation::{ExportedEndpoint, ServiceSpec};

    fn local_kafka(endpoints: &[&str]) -> LocalService {
        LocalService {
            spec: ServiceSpec::with_headless(
                "kafka.data".parse().unwrap(),
                vec!["broker=9092".parse().unwrap()],
                endpoints.iter().map(|e| e.parse().unwrap()).collect(),
                true,
            )
            .unwrap(),
            exported: true,
            health: vec![true; endpoints.len()],
        }
    }

    fn west_kafka(hostnames: &[&str]) -> Vec<ExportedService> {
        vec![ExportedService {
            name: "kafka.data".parse().unwrap(),
            ports: vec!["broker=9092".parse().unwrap()],
            healthy: BTreeMap::new(),
            headless: true,
            endpoints: hostnames
                .iter()
                .map(|h| ExportedEndpoint {
                    hostname: h.parse().unwrap(),
                    healthy: true,
                })
                .collect(),
        }]
    }

    fn hostnames(vips: &BTreeMap<EndpointKey, IpAddr>) -> Vec<String> {
        vips.keys().map(|(_, c, h)| format!("{c}/{h}")).collect()
    }

    #[test]
    fn endpoint_vips_follow_word_of_departure_not_silence() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let range: VipRange = "127.10.0.0/24".parse().unwrap();
        let east: ClusterId = "east".parse().unwrap();
        let west: ClusterId = "west".parse().unwrap();
        let link = vec![LinkRecord {
            peer: west.clone(),
            gateways: vec![],
            connected: true,
        }];
        let run = |local: &[LocalService],
                   imports: &BTreeMap<ClusterId, Vec<ExportedService>>,
                   links: &[LinkRecord]| {
            let inputs = VipInputs {
                cluster: &east,
                local,
                imports,
                links,
            };
            endpoint_vips(&store, range, &inputs).unwrap()
        };

        let local = [local_kafka(&["k-0=10.0.0.1", "10.0.0.2"])];
        let imports: BTreeMap<_, _> = [(west.clone(), west_kafka(&["k-0", "k-1"]))].into();
        let first = run(&local, &imports, &link);
        assert_eq!(
            hostnames(&first),
            ["east/10-0-0-2", "east/k-0", "west/k-0", "west/k-1"]
        );
        assert_eq!(run(&local, &imports, &link), first, "stable");

        // West's imports withdrawn (silence): its VIPs stay.
        let none = BTreeMap::new();
        let quiet = run(&local, &none, &link);
        assert_eq!(hostnames(&quiet), ["east/10-0-0-2", "east/k-0"]);
        assert_eq!(store.endpoint_vips().unwrap().len(), 4, "kept in the store");
        assert_eq!(run(&local, &imports, &link), first, "same VIPs on return");

        // West reports without k-1, and east drops 10.0.0.2: both released.
        let fewer: BTreeMap<_, _> = [(west.clone(), west_kafka(&["k-0"]))].into();
        let local_fewer = [local_kafka(&["k-0=10.0.0.1"])];
        let after = run(&local_fewer, &fewer, &link);
        assert_eq!(hostnames(&after), ["east/k-0", "west/k-0"]);
        assert_eq!(store.endpoint_vips().unwrap().len(), 2);

        // The link is removed: west's endpoint VIPs are released too.
        run(&local_fewer, &none, &[]);
        assert_eq!(hostnames(&store.endpoint_vips().unwrap()), ["east/k-0"]);
    }
}
