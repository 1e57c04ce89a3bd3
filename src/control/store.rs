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

use ferry_federation::{ClusterId, InvalidPolicy, ServiceName, ServiceSpec, TrafficPolicy};

use super::vips::{VipEntry, VipPlan};
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

const SERVICES: TableDefinition<'_, &str, &str> = TableDefinition::new("services");
const LINKS: TableDefinition<'_, &str, &str> = TableDefinition::new("links");
const TOKENS: TableDefinition<'_, &str, &str> = TableDefinition::new("tokens");
const CERTS: TableDefinition<'_, &str, &str> = TableDefinition::new("certs");
const VIPS: TableDefinition<'_, &str, &str> = TableDefinition::new("vips");
const POLICIES: TableDefinition<'_, &str, &str> = TableDefinition::new("policies");

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
    #[error("stored policy {key} is out of bounds: {source}; set it again with `ferry policy set` or clear it with `ferry policy clear {key}`")]
    InvalidPolicy {
        key: String,
        #[source]
        source: InvalidPolicy,
    },
}

fn db_err(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Db(Box::new(e.into()))
}

/// A service as stored: its spec, whether it is exported, and since when (unix seconds;
/// peers use it to tell the oldest export of a name).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ServiceDoc {
    pub spec: ServiceSpec,
    pub exported: bool,
    #[serde(default)]
    pub exported_at_ms: u64,
    /// Declared in the config file (managed by it), as opposed to added with the CLI.
    #[serde(default)]
    pub declared: bool,
}

/// A service's traffic policy as stored.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PolicyDoc {
    pub policy: TrafficPolicy,
    /// Declared in the config file (managed by it), as opposed to set with the CLI.
    #[serde(default)]
    pub declared: bool,
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
    /// The VIP table as committed, read once: this process is the store's only writer (redb
    /// locks the file), so a republish that changes no VIP reads and writes nothing.
    vip_cache: std::sync::Mutex<Option<BTreeMap<String, VipEntry>>>,
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
        // Created owner-only by the process umask (077 for long-running roles), never
        // chmod'ed afterwards.
        let tx = db.begin_write().map_err(db_err)?;
        for t in [SERVICES, LINKS, TOKENS, CERTS, VIPS, POLICIES] {
            tx.open_table(t).map_err(db_err)?;
        }
        tx.commit().map_err(db_err)?;
        Ok(Store {
            db,
            vip_cache: std::sync::Mutex::new(None),
        })
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

    /// Every stored policy, by service. A stored policy out of bounds (written by an
    /// older version, or edited by hand) is a corrupt record, not a policy to apply.
    pub fn policies(&self) -> Result<BTreeMap<ServiceName, PolicyDoc>, StoreError> {
        let mut out = BTreeMap::new();
        for (key, doc) in self.all::<PolicyDoc>(POLICIES, "policies")? {
            doc.policy
                .validate()
                .map_err(|source| StoreError::InvalidPolicy { key, source })?;
            out.insert(doc.policy.service.clone(), doc);
        }
        Ok(out)
    }

    pub fn put_policy(&self, doc: &PolicyDoc) -> Result<(), StoreError> {
        self.put(POLICIES, &doc.policy.service.to_string(), doc)
    }

    /// Removes a service's policy. Returns false if it had none.
    pub fn remove_policy(&self, name: &ServiceName) -> Result<bool, StoreError> {
        self.remove(POLICIES, &name.to_string())
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

    /// Applies [`super::vips::plan`] to the VIP table: decides over the committed rows (read
    /// from the file once, then kept in memory) and writes what changed in one transaction.
    /// Nothing is opened, written or committed when nothing changed.
    pub fn sync_vips(
        &self,
        decide: impl FnOnce(&BTreeMap<String, VipEntry>) -> VipPlan,
    ) -> Result<VipPlan, StoreError> {
        let mut cache = self.vip_cache.lock().expect("VIP cache lock");
        let rows = match cache.take() {
            Some(rows) => rows,
            None => self.vip_rows()?,
        };
        let plan = decide(&rows);
        if plan.writes.is_empty() {
            *cache = Some(rows);
            return Ok(plan);
        }
        let tx = self.db.begin_write().map_err(db_err)?;
        {
            let mut table = tx.open_table(VIPS).map_err(db_err)?;
            for (key, write) in &plan.writes {
                match write {
                    Some(entry) => {
                        let json = serde_json::to_string(entry).expect("VIP rows serialize");
                        table.insert(key.as_str(), json.as_str()).map_err(db_err)?;
                    }
                    None => {
                        table.remove(key.as_str()).map_err(db_err)?;
                    }
                }
            }
        }
        tx.commit().map_err(db_err)?;
        // Only what was committed enters the cache; on an error above it is re-read.
        let mut rows = rows;
        for (key, write) in &plan.writes {
            match write {
                Some(entry) => rows.insert(key.clone(), *entry),
                None => rows.remove(key),
            };
        }
        *cache = Some(rows);
        Ok(plan)
    }

    /// Every VIP row, quarantined ones included.
    pub fn vip_rows(&self) -> Result<BTreeMap<String, VipEntry>, StoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        read_vip_rows(&tx.open_table(VIPS).map_err(db_err)?)
    }
}

fn read_vip_rows(
    table: &impl ReadableTable<&'static str, &'static str>,
) -> Result<BTreeMap<String, VipEntry>, StoreError> {
    let mut out = BTreeMap::new();
    for item in table.iter().map_err(db_err)? {
        let (k, v) = item.map_err(db_err)?;
        let key = k.value().to_owned();
        let entry = parse_vip_row(v.value()).map_err(|source| StoreError::Corrupt {
            table: "vips",
            key: key.clone(),
            source,
        })?;
        out.insert(key, entry);
    }
    Ok(out)
}

/// A VIP row: `{"ip": …, "released_at": …}`, or a bare address as older versions wrote.
fn parse_vip_row(json: &str) -> Result<VipEntry, serde_json::Error> {
    serde_json::from_str::<VipEntry>(json).or_else(|_| {
        serde_json::from_str::<IpAddr>(json).map(|ip| VipEntry {
            ip,
            released_at: None,
        })
    })
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
            exported_at_ms: 1,
            declared: false,
        }
    }

    #[test]
    fn state_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store.put_service(&svc("web.shop")).unwrap();
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
    }

    #[test]
    fn vip_rows_of_older_versions_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let ip: IpAddr = "127.10.0.7".parse().unwrap();
        store.put(VIPS, "a.x", &ip).unwrap();
        assert_eq!(
            store.vip_rows().unwrap()["a.x"],
            VipEntry {
                ip,
                released_at: None
            }
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
