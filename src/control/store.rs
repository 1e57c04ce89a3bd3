//! The control plane's durable state in an embedded transactional store (redb).
//!
//! Every admin command commits here before it answers, so a control plane killed with
//! SIGKILL comes back with everything a command reported as done. Values are JSON of
//! ferry-federation's validated types; keys are their string forms. This module owns
//! no policy beyond the atomic checks that must happen inside one transaction (token
//! redemption, VIP allocation).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use ferry_federation::{ClusterId, EndpointKey, ServiceName, ServiceSpec};
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::config::VipRange;

const SERVICES: TableDefinition<'_, &str, &str> = TableDefinition::new("services");
const LINKS: TableDefinition<'_, &str, &str> = TableDefinition::new("links");
const TOKENS: TableDefinition<'_, &str, &str> = TableDefinition::new("tokens");
const CERTS: TableDefinition<'_, &str, &str> = TableDefinition::new("certs");
const VIPS: TableDefinition<'_, &str, &str> = TableDefinition::new("vips");

/// Store failures: the file could not be opened, or a transaction failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the control-plane store at {0}: {1}; check the path and that no other `ferry control` uses it")]
    Open(PathBuf, #[source] Box<redb::DatabaseError>),
    #[error("control-plane store failure: {0}")]
    Db(#[from] Box<redb::Error>),
    #[error("corrupt record in table {table} key {key}: {source}")]
    Corrupt {
        table: &'static str,
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("the VIP range {0} is exhausted; widen control.vip_range")]
    VipsExhausted(VipRange),
}

fn db_err(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Db(Box::new(e.into()))
}

/// A service as stored: its spec and whether it is exported.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ServiceDoc {
    pub spec: ServiceSpec,
    pub exported: bool,
}

/// A link to a peer cluster.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LinkDoc {
    pub peer: ClusterId,
    pub gateways: Vec<SocketAddr>,
    pub created_at_unix: u64,
}

/// A link token this cluster issued. The secret stays in this store (file mode 0600).
#[derive(Clone, Serialize, Deserialize)]
pub struct TokenDoc {
    pub peer: ClusterId,
    pub secret: [u8; 32],
    pub expires_at_unix: u64,
    pub used: bool,
}

impl std::fmt::Debug for TokenDoc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenDoc")
            .field("peer", &self.peer)
            .field("secret", &"<redacted>")
            .field("expires_at_unix", &self.expires_at_unix)
            .field("used", &self.used)
            .finish()
    }
}

/// A certificate the cluster CA issued.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CertDoc {
    pub identity: String,
    pub not_after_unix: u64,
}

/// Why a token could not be redeemed; the text goes back to the joining cluster.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RedeemError {
    #[error("unknown link token: this cluster did not issue it; ask for a new one with `ferry link create`")]
    Unknown,
    #[error("link token already used: tokens are single use; ask for a new one with `ferry link create --peer {0}`")]
    Used(ClusterId),
    #[error("link token expired; ask for a new one with `ferry link create --peer {0}`")]
    Expired(ClusterId),
    #[error("link token was issued for peer `{expected}`, not `{got}`; create one with `ferry link create --peer {got}`")]
    WrongPeer { expected: ClusterId, got: ClusterId },
    #[error("link token proof is wrong: the token was modified or is not the one issued")]
    BadProof,
}

/// The embedded store.
pub struct Store {
    db: Database,
}

impl Store {
    /// Opens (or creates) the store file under `dir`, mode 0600.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Open(
                dir.to_owned(),
                Box::new(redb::DatabaseError::Storage(e.into())),
            )
        })?;
        let path = dir.join("control.redb");
        let db =
            Database::create(&path).map_err(|e| StoreError::Open(path.clone(), Box::new(e)))?;
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
        }
        let tx = db.begin_write().map_err(db_err)?;
        for t in [SERVICES, LINKS, TOKENS, CERTS, VIPS] {
            tx.open_table(t).map_err(db_err)?;
        }
        tx.commit().map_err(db_err)?;
        Ok(Store { db })
    }

    fn all<T: DeserializeOwned>(
        &self,
        def: TableDefinition<'_, &str, &str>,
        name: &'static str,
    ) -> Result<Vec<(String, T)>, StoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let table = tx.open_table(def).map_err(db_err)?;
        let mut out = Vec::new();
        for item in table.iter().map_err(db_err)? {
            let (k, v) = item.map_err(db_err)?;
            let key = k.value().to_owned();
            let value = serde_json::from_str(v.value()).map_err(|source| StoreError::Corrupt {
                table: name,
                key: key.clone(),
                source,
            })?;
            out.push((key, value));
        }
        Ok(out)
    }

    fn put<T: Serialize>(
        &self,
        def: TableDefinition<'_, &str, &str>,
        key: &str,
        value: &T,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(value).expect("store values serialize");
        let tx = self.db.begin_write().map_err(db_err)?;
        tx.open_table(def)
            .map_err(db_err)?
            .insert(key, json.as_str())
            .map_err(db_err)?;
        tx.commit().map_err(db_err)
    }

    fn remove(&self, def: TableDefinition<'_, &str, &str>, key: &str) -> Result<bool, StoreError> {
        let tx = self.db.begin_write().map_err(db_err)?;
        let existed = tx
            .open_table(def)
            .map_err(db_err)?
            .remove(key)
            .map_err(db_err)?
            .is_some();
        tx.commit().map_err(db_err)?;
        Ok(existed)
    }

    pub fn services(&self) -> Result<BTreeMap<ServiceName, ServiceDoc>, StoreError> {
        Ok(self
            .all::<ServiceDoc>(SERVICES, "services")?
            .into_iter()
            .map(|(_, d)| (d.spec.name.clone(), d))
            .collect())
    }

    pub fn put_service(&self, doc: &ServiceDoc) -> Result<(), StoreError> {
        self.put(SERVICES, &doc.spec.name.to_string(), doc)
    }

    /// Removes a service and releases its VIP. Returns false if it did not exist.
    pub fn remove_service(&self, name: &ServiceName) -> Result<bool, StoreError> {
        self.remove(SERVICES, &name.to_string())
    }

    pub fn links(&self) -> Result<Vec<LinkDoc>, StoreError> {
        Ok(self
            .all::<LinkDoc>(LINKS, "links")?
            .into_iter()
            .map(|(_, d)| d)
            .collect())
    }

    pub fn put_link(&self, doc: &LinkDoc) -> Result<(), StoreError> {
        self.put(LINKS, doc.peer.as_str(), doc)
    }

    pub fn remove_link(&self, peer: &ClusterId) -> Result<bool, StoreError> {
        self.remove(LINKS, peer.as_str())
    }

    pub fn put_token(&self, id: &[u8; 16], doc: &TokenDoc) -> Result<(), StoreError> {
        self.put(TOKENS, &hex(id), doc)
    }

    /// Atomically checks and spends a token; on success also records the link.
    /// `check_proof` verifies the joiner's proof with the token's secret.
    pub fn redeem_token(
        &self,
        id: &[u8; 16],
        joiner: &ClusterId,
        now_unix: u64,
        check_proof: impl FnOnce(&[u8; 32]) -> bool,
        link: &LinkDoc,
    ) -> Result<Result<(), RedeemError>, StoreError> {
        let key = hex(id);
        let tx = self.db.begin_write().map_err(db_err)?;
        {
            let mut tokens = tx.open_table(TOKENS).map_err(db_err)?;
            let doc: TokenDoc = match tokens.get(key.as_str()).map_err(db_err)? {
                None => return Ok(Err(RedeemError::Unknown)),
                Some(v) => {
                    serde_json::from_str(v.value()).map_err(|source| StoreError::Corrupt {
                        table: "tokens",
                        key: key.clone(),
                        source,
                    })?
                }
            };
            if doc.used {
                return Ok(Err(RedeemError::Used(doc.peer)));
            }
            if now_unix >= doc.expires_at_unix {
                return Ok(Err(RedeemError::Expired(doc.peer)));
            }
            if &doc.peer != joiner {
                return Ok(Err(RedeemError::WrongPeer {
                    expected: doc.peer,
                    got: joiner.clone(),
                }));
            }
            if !check_proof(&doc.secret) {
                return Ok(Err(RedeemError::BadProof));
            }
            let spent = TokenDoc { used: true, ..doc };
            let json = serde_json::to_string(&spent).expect("token serializes");
            tokens.insert(key.as_str(), json.as_str()).map_err(db_err)?;
            let json = serde_json::to_string(link).expect("link serializes");
            tx.open_table(LINKS)
                .map_err(db_err)?
                .insert(link.peer.as_str(), json.as_str())
                .map_err(db_err)?;
        }
        tx.commit().map_err(db_err)?;
        Ok(Ok(()))
    }

    pub fn record_cert(&self, serial: &str, doc: &CertDoc) -> Result<(), StoreError> {
        self.put(CERTS, serial, doc)
    }

    pub fn cert_count(&self) -> Result<usize, StoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let n =
            ReadableTableMetadata::len(&tx.open_table(CERTS).map_err(db_err)?).map_err(db_err)?;
        Ok(n as usize)
    }

    /// Service VIPs by service.
    pub fn vips(&self) -> Result<BTreeMap<ServiceName, IpAddr>, StoreError> {
        let mut out = BTreeMap::new();
        for (k, v) in self.all::<IpAddr>(VIPS, "vips")? {
            if let Ok(name) = k.parse() {
                out.insert(name, v);
            }
        }
        Ok(out)
    }

    /// Endpoint VIPs (of headless services' endpoints) by endpoint.
    pub fn endpoint_vips(&self) -> Result<BTreeMap<EndpointKey, IpAddr>, StoreError> {
        let mut out = BTreeMap::new();
        for (k, v) in self.all::<IpAddr>(VIPS, "vips")? {
            if let Some(key) = parse_endpoint_key(&k) {
                out.insert(key, v);
            }
        }
        Ok(out)
    }

    /// Returns the service's VIP, allocating the lowest free one in `range` if it has none.
    pub fn allocate_vip(&self, name: &ServiceName, range: VipRange) -> Result<IpAddr, StoreError> {
        self.allocate(&name.to_string(), range)
    }

    /// Returns the endpoint's VIP, allocating the lowest free one in `range` (shared with
    /// service VIPs) if it has none.
    pub fn allocate_endpoint_vip(
        &self,
        key: &EndpointKey,
        range: VipRange,
    ) -> Result<IpAddr, StoreError> {
        self.allocate(&endpoint_key(key), range)
    }

    /// Frees the endpoint's VIP for reuse.
    pub fn release_endpoint_vip(&self, key: &EndpointKey) -> Result<(), StoreError> {
        self.remove(VIPS, &endpoint_key(key)).map(|_| ())
    }

    fn allocate(&self, key: &str, range: VipRange) -> Result<IpAddr, StoreError> {
        let tx = self.db.begin_write().map_err(db_err)?;
        let ip = {
            let mut table = tx.open_table(VIPS).map_err(db_err)?;
            if let Some(v) = table.get(key).map_err(db_err)? {
                if let Ok(ip) = serde_json::from_str::<IpAddr>(v.value()) {
                    if range.contains(ip) {
                        return Ok(ip);
                    }
                }
            }
            let mut used = std::collections::HashSet::new();
            for item in table.iter().map_err(db_err)? {
                let (_, v) = item.map_err(db_err)?;
                if let Ok(ip) = serde_json::from_str::<IpAddr>(v.value()) {
                    used.insert(ip);
                }
            }
            let ip = (0..range.size())
                .filter_map(|i| range.nth(i))
                .map(IpAddr::V4)
                .find(|ip| !used.contains(ip))
                .ok_or(StoreError::VipsExhausted(range))?;
            let json = serde_json::to_string(&ip).expect("ip serializes");
            table.insert(key, json.as_str()).map_err(db_err)?;
            ip
        };
        tx.commit().map_err(db_err)?;
        Ok(ip)
    }

    pub fn release_vip(&self, name: &ServiceName) -> Result<(), StoreError> {
        self.remove(VIPS, &name.to_string()).map(|_| ())
    }
}

/// The VIP table key of an endpoint: `<service>/<cluster>/<hostname>`. It never parses as a
/// service name, so endpoint and service VIPs share one table (and so one address pool)
/// without being mistaken for each other.
fn endpoint_key((service, cluster, hostname): &EndpointKey) -> String {
    format!("{service}/{cluster}/{hostname}")
}

fn parse_endpoint_key(s: &str) -> Option<EndpointKey> {
    let mut parts = s.split('/');
    let key = (
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
    );
    parts.next().is_none().then_some(key)
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str) -> ServiceDoc {
        ServiceDoc {
            spec: ServiceSpec::new(
                name.parse().unwrap(),
                vec!["http=8080/http".parse().unwrap()],
                vec!["127.0.0.1:9000".parse().unwrap()],
            )
            .unwrap(),
            exported: true,
        }
    }

    #[test]
    fn state_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let range: VipRange = "127.10.0.0/16".parse().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store.put_service(&svc("web.shop")).unwrap();
            store
                .allocate_vip(&"web.shop".parse().unwrap(), range)
                .unwrap();
            store
                .put_link(&LinkDoc {
                    peer: "west".parse().unwrap(),
                    gateways: vec!["127.0.0.1:4433".parse().unwrap()],
                    created_at_unix: 1,
                })
                .unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.services().unwrap().len(), 1);
        assert_eq!(store.links().unwrap().len(), 1);
        let vip = store.vips().unwrap()[&"web.shop".parse::<ServiceName>().unwrap()];
        assert_eq!(vip, "127.10.0.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn vips_are_stable_and_distinct() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let range: VipRange = "127.10.0.0/30".parse().unwrap();
        let a = store.allocate_vip(&"a.x".parse().unwrap(), range).unwrap();
        let b = store.allocate_vip(&"b.x".parse().unwrap(), range).unwrap();
        assert_ne!(a, b);
        assert_eq!(
            store.allocate_vip(&"a.x".parse().unwrap(), range).unwrap(),
            a
        );
        assert!(matches!(
            store.allocate_vip(&"c.x".parse().unwrap(), range),
            Err(StoreError::VipsExhausted(_))
        ));
        store.release_vip(&"a.x".parse().unwrap()).unwrap();
        assert_eq!(
            store.allocate_vip(&"c.x".parse().unwrap(), range).unwrap(),
            a
        );
    }

    #[test]
    fn endpoint_vips_share_the_pool_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let range: VipRange = "127.10.0.0/29".parse().unwrap();
        let kafka0: EndpointKey = (
            "kafka.data".parse().unwrap(),
            "west".parse().unwrap(),
            "kafka-0".parse().unwrap(),
        );
        let dashed: EndpointKey = (
            "kafka.data".parse().unwrap(),
            "east".parse().unwrap(),
            "10-0-0-5".parse().unwrap(),
        );
        let (svc, ep0, ep1) = {
            let store = Store::open(dir.path()).unwrap();
            let svc = store
                .allocate_vip(&"kafka.data".parse().unwrap(), range)
                .unwrap();
            let ep0 = store.allocate_endpoint_vip(&kafka0, range).unwrap();
            let ep1 = store.allocate_endpoint_vip(&dashed, range).unwrap();
            assert_eq!(store.allocate_endpoint_vip(&kafka0, range).unwrap(), ep0);
            (svc, ep0, ep1)
        };
        assert!(svc != ep0 && svc != ep1 && ep0 != ep1, "one pool");
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(
            store.vips().unwrap().len(),
            1,
            "endpoint keys are not services"
        );
        let eps = store.endpoint_vips().unwrap();
        assert_eq!(eps.len(), 2);
        assert_eq!(eps[&kafka0], ep0);
        assert_eq!(eps[&dashed], ep1);
        store.release_endpoint_vip(&kafka0).unwrap();
        assert_eq!(store.endpoint_vips().unwrap().len(), 1);
        let other: EndpointKey = (
            kafka0.0.clone(),
            kafka0.1.clone(),
            "kafka-9".parse().unwrap(),
        );
        assert_eq!(
            store.allocate_endpoint_vip(&other, range).unwrap(),
            ep0,
            "reused"
        );
    }

    #[test]
    fn token_redeems_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let id = [7u8; 16];
        let west: ClusterId = "west".parse().unwrap();
        store
            .put_token(
                &id,
                &TokenDoc {
                    peer: west.clone(),
                    secret: [1; 32],
                    expires_at_unix: 100,
                    used: false,
                },
            )
            .unwrap();
        let link = LinkDoc {
            peer: west.clone(),
            gateways: vec![],
            created_at_unix: 1,
        };
        let north: ClusterId = "north".parse().unwrap();
        assert!(matches!(
            store
                .redeem_token(&id, &north, 10, |_| true, &link)
                .unwrap(),
            Err(RedeemError::WrongPeer { .. })
        ));
        assert_eq!(
            store
                .redeem_token(&id, &west, 10, |_| false, &link)
                .unwrap(),
            Err(RedeemError::BadProof)
        );
        assert_eq!(
            store
                .redeem_token(&id, &west, 100, |_| true, &link)
                .unwrap(),
            Err(RedeemError::Expired(west.clone()))
        );
        assert_eq!(
            store.links().unwrap().len(),
            0,
            "failed redemptions change nothing"
        );
        assert_eq!(
            store.redeem_token(&id, &west, 10, |_| true, &link).unwrap(),
            Ok(())
        );
        assert_eq!(
            store.redeem_token(&id, &west, 10, |_| true, &link).unwrap(),
            Err(RedeemError::Used(west.clone()))
        );
        assert_eq!(
            store
                .redeem_token(&[0; 16], &west, 10, |_| true, &link)
                .unwrap(),
            Err(RedeemError::Unknown)
        );
        assert_eq!(store.links().unwrap().len(), 1);
    }
}
