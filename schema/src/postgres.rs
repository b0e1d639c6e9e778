//! Postgres store through `deadpool-postgres`, with embedded `refinery` migrations.

use std::time::{Duration, SystemTime};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use meridian_ids::{NodeId, ParticipantIdentity, RegionId, RoomName, RoomSid};
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

use crate::{NodeRecord, RoomOptions, RoomRecord, Store, StoreError, TokenGrants, TokenRecord, WebhookRecord};

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Advisory lock key serialising migrations across processes ("meridian" in ASCII).
const MIGRATION_LOCK: i64 = 0x6d65_7269_6469_616e;

/// Default pool size: enough for a gateway or SFU node on a small machine.
pub const DEFAULT_POOL_SIZE: usize = 16;
/// Longest a store call waits for a pooled connection, to connect, or to check
/// one before reuse: 5 s. With the database down or unreachable, calls fail with
/// [`StoreError::Unavailable`] within it instead of hanging the join or the
/// heartbeat that made them.
pub const POOL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Applies every pending migration in `schema/migrations` to the database at `url`.
///
/// Errors: [`StoreError::Unavailable`] when the database cannot be reached,
/// [`StoreError::Migration`] when a migration fails.
pub async fn migrate(url: &str) -> Result<(), StoreError> {
    let config: tokio_postgres::Config = url.parse().map_err(unavailable)?;
    let (mut client, connection) = config.connect(NoTls).await.map_err(unavailable)?;
    let conn_task = tokio::spawn(connection);
    // Gateways and nodes start together and all migrate: one at a time, under a
    // session advisory lock (released when this connection closes).
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK]).await.map_err(unavailable)?;
    let report = embedded::migrations::runner()
        .run_async(&mut client)
        .await
        .map_err(|e| StoreError::Migration(format!("{e} ({:?})", e.kind())))?;
    for m in report.applied_migrations() {
        tracing::info!(migration = %m.name(), version = m.version(), "applied migration");
    }
    drop(client);
    let _ = conn_task.await;
    Ok(())
}

/// The Postgres-backed store.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
}

impl PgStore {
    /// Connects a pool to `url` (a libpq-style URL, e.g.
    /// `postgres://postgres@127.0.0.1:5432/test`) and checks one connection.
    /// Does not migrate; call [`migrate`] first.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let mut config: tokio_postgres::Config = url.parse().map_err(unavailable)?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(POOL_TIMEOUT);
        }
        let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(DEFAULT_POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(POOL_TIMEOUT))
            .create_timeout(Some(POOL_TIMEOUT))
            .recycle_timeout(Some(POOL_TIMEOUT))
            .build()
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        // Check one connection now, so a wrong URL fails at start rather than on first use.
        drop(pool.get().await.map_err(unavailable)?);
        Ok(Self { pool })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(unavailable)
    }

    /// Runs one statement; whether it touched a row.
    async fn changed(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<bool, StoreError> {
        let n = self.client().await?.execute(sql, params).await.map_err(unavailable)?;
        Ok(n > 0)
    }
}

fn unavailable(e: impl std::fmt::Display + 'static) -> StoreError {
    // tokio-postgres says only "db error"; the server's message is the reason.
    if let Some(db) = (&e as &dyn std::any::Any).downcast_ref::<tokio_postgres::Error>().and_then(|e| e.as_db_error()) {
        return StoreError::Unavailable(format!("db error {}: {}", db.code().code(), db.message()));
    }
    StoreError::Unavailable(e.to_string())
}

fn token_from_row(row: &Row) -> Result<TokenRecord, StoreError> {
    let grants: serde_json::Value = row.get("grants");
    let grants: TokenGrants =
        serde_json::from_value(grants).map_err(|e| StoreError::Corrupt(format!("tokens.grants: {e}")))?;
    Ok(TokenRecord {
        id: row.get("id"),
        api_key: row.get("api_key"),
        room: RoomName::new(row.get::<_, String>("room")),
        identity: ParticipantIdentity::new(row.get::<_, String>("identity")),
        grants,
        issued_at: row.get("issued_at"),
        expires_at: row.get("expires_at"),
        revoked_at: row.get("revoked_at"),
    })
}

fn room_from_row(row: &Row) -> RoomRecord {
    RoomRecord {
        name: RoomName::new(row.get::<_, String>("name")),
        sid: RoomSid::new(row.get::<_, String>("sid")),
        region: row.get::<_, Option<String>>("region").map(RegionId::new),
        node: row.get::<_, Option<String>>("node").map(NodeId::new),
        created_at: row.get("created_at"),
        pinned: row.get("pinned"),
        options: RoomOptions {
            max_participants: u32::try_from(row.get::<_, i32>("max_participants")).unwrap_or(0),
            departure_timeout: u32::try_from(row.get::<_, i32>("departure_timeout")).unwrap_or(0),
            empty_timeout: u32::try_from(row.get::<_, i32>("empty_timeout")).unwrap_or(0),
            metadata: row.get("metadata"),
        },
    }
}

fn node_from_row(row: &Row) -> Result<NodeRecord, StoreError> {
    let corrupt = |what: &str, e: serde_json::Error| StoreError::Corrupt(format!("nodes.{what}: {e}"));
    let turn_urls: serde_json::Value = row.get("turn_urls");
    let load: serde_json::Value = row.get("load");
    let lat: Option<f64> = row.get("latitude");
    let lon: Option<f64> = row.get("longitude");
    let capacity: i32 = row.get("capacity");
    Ok(NodeRecord {
        id: NodeId::new(row.get::<_, String>("id")),
        region: RegionId::new(row.get::<_, String>("region")),
        position: lat.zip(lon),
        signal_addr: row.get("signal_addr"),
        turn_urls: serde_json::from_value(turn_urls).map_err(|e| corrupt("turn_urls", e))?,
        capacity: u32::try_from(capacity).unwrap_or(0),
        load: serde_json::from_value(load).map_err(|e| corrupt("load", e))?,
        draining: row.get("draining"),
        last_seen: row.get("last_seen"),
    })
}

const TOKEN_COLUMNS: &str = "id, api_key, room, identity, grants, issued_at, expires_at, revoked_at";
const ROOM_COLUMNS: &str =
    "name, sid, region, node, created_at, pinned, max_participants, departure_timeout, metadata, empty_timeout";

#[async_trait::async_trait]
impl Store for PgStore {
    async fn record_token(&self, t: &TokenRecord) -> Result<(), StoreError> {
        let grants = serde_json::to_value(&t.grants).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.client()
            .await?
            .execute(
                "INSERT INTO tokens (id, api_key, room, identity, grants, issued_at, expires_at, revoked_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING",
                &[
                    &t.id,
                    &t.api_key,
                    &t.room.as_str(),
                    &t.identity.as_str(),
                    &grants,
                    &t.issued_at,
                    &t.expires_at,
                    &t.revoked_at,
                ],
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        let sql = format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE id = $1");
        let row = self.client().await?.query_opt(&sql, &[&id]).await.map_err(unavailable)?;
        row.as_ref().map(token_from_row).transpose()
    }

    async fn tokens(
        &self,
        room: Option<&RoomName>,
        identity: Option<&ParticipantIdentity>,
        limit: usize,
    ) -> Result<Vec<TokenRecord>, StoreError> {
        let sql = format!(
            "SELECT {TOKEN_COLUMNS} FROM tokens WHERE ($1::text IS NULL OR room = $1) \
             AND ($2::text IS NULL OR identity = $2) ORDER BY issued_at, id LIMIT $3"
        );
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let (room, identity) = (room.map(RoomName::as_str), identity.map(ParticipantIdentity::as_str));
        let rows = self.client().await?.query(&sql, &[&room, &identity, &limit]).await.map_err(unavailable)?;
        rows.iter().map(token_from_row).collect()
    }

    async fn revoke_token(&self, id: &str, at: SystemTime) -> Result<bool, StoreError> {
        self.changed("UPDATE tokens SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1", &[&id, &at]).await
    }

    async fn get_or_create_room(&self, r: &RoomRecord) -> Result<RoomRecord, StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO rooms (name, sid, region, node, created_at, pinned, max_participants, departure_timeout,
                 metadata, empty_timeout) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (name) DO NOTHING",
                &[
                    &r.name.as_str(),
                    &r.sid.as_str(),
                    &r.region.as_ref().map(RegionId::as_str),
                    &r.node.as_ref().map(NodeId::as_str),
                    &r.created_at,
                    &r.pinned,
                    &i32::try_from(r.options.max_participants).unwrap_or(i32::MAX),
                    &i32::try_from(r.options.departure_timeout).unwrap_or(i32::MAX),
                    &r.options.metadata,
                    &i32::try_from(r.options.empty_timeout).unwrap_or(i32::MAX),
                ],
            )
            .await
            .map_err(unavailable)?;
        let sql = format!("SELECT {ROOM_COLUMNS} FROM rooms WHERE name = $1");
        let row = client.query_one(&sql, &[&r.name.as_str()]).await.map_err(unavailable)?;
        Ok(room_from_row(&row))
    }

    async fn room(&self, name: &RoomName) -> Result<Option<RoomRecord>, StoreError> {
        let sql = format!("SELECT {ROOM_COLUMNS} FROM rooms WHERE name = $1");
        let row = self.client().await?.query_opt(&sql, &[&name.as_str()]).await.map_err(unavailable)?;
        Ok(row.as_ref().map(room_from_row))
    }

    async fn enqueue_webhook(&self, e: &WebhookRecord) -> Result<(), StoreError> {
        self.changed(
            "INSERT INTO webhook_outbox (id, url, room, body, created_at, attempts, next_attempt_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $5) ON CONFLICT (id) DO NOTHING",
            &[&e.id, &e.url, &e.room.as_str(), &e.body, &e.created_at, &i32::try_from(e.attempts).unwrap_or(i32::MAX)],
        )
        .await
        .map(drop)
    }

    async fn claim_webhook(&self, now: SystemTime, lease: Duration) -> Result<Option<WebhookRecord>, StoreError> {
        // The head of each room's line is its lowest seq (delivered events are
        // deleted); SKIP LOCKED lets several gateways claim side by side.
        let sql = "UPDATE webhook_outbox SET claimed_until = $2, attempts = attempts + 1 WHERE id = ( \
                   SELECT o.id FROM webhook_outbox o \
                   WHERE o.seq = (SELECT min(p.seq) FROM webhook_outbox p WHERE p.url = o.url AND p.room = o.room) \
                   AND o.next_attempt_at <= $1 AND (o.claimed_until IS NULL OR o.claimed_until <= $1) \
                   ORDER BY o.seq LIMIT 1 FOR UPDATE SKIP LOCKED) \
                   RETURNING id, url, room, body, created_at, attempts";
        let until = now.checked_add(lease).unwrap_or(now);
        let row = self.client().await?.query_opt(sql, &[&now, &until]).await.map_err(unavailable)?;
        Ok(row.map(|r| WebhookRecord {
            id: r.get(0),
            url: r.get(1),
            room: RoomName::from(r.get::<_, String>(2)),
            body: r.get(3),
            created_at: r.get(4),
            attempts: u32::try_from(r.get::<_, i32>(5)).unwrap_or(0),
        }))
    }

    async fn webhook_done(&self, id: &str) -> Result<(), StoreError> {
        self.changed("DELETE FROM webhook_outbox WHERE id = $1", &[&id]).await.map(drop)
    }

    async fn webhook_retry(&self, id: &str, retry_at: SystemTime) -> Result<(), StoreError> {
        self.changed(
            "UPDATE webhook_outbox SET next_attempt_at = $2, claimed_until = NULL WHERE id = $1",
            &[&id, &retry_at],
        )
        .await
        .map(drop)
    }

    async fn webhook_depth(&self) -> Result<u64, StoreError> {
        let row =
            self.client().await?.query_one("SELECT count(*) FROM webhook_outbox", &[]).await.map_err(unavailable)?;
        Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
    }

    async fn sweep_unjoined_rooms(&self, now: SystemTime) -> Result<u64, StoreError> {
        let default = i32::try_from(crate::DEFAULT_EMPTY_TIMEOUT.as_secs()).unwrap_or(i32::MAX);
        let client = self.client().await?;
        let n = client
            .execute(
                "DELETE FROM rooms WHERE NOT pinned AND node IS NULL AND created_at + \
                 make_interval(secs => CASE WHEN empty_timeout = 0 THEN $2 ELSE empty_timeout END) <= $1",
                &[&now, &default],
            )
            .await
            .map_err(unavailable)?;
        Ok(n)
    }

    async fn rooms(&self) -> Result<Vec<RoomRecord>, StoreError> {
        let sql = format!("SELECT {ROOM_COLUMNS} FROM rooms ORDER BY name");
        let rows = self.client().await?.query(&sql, &[]).await.map_err(unavailable)?;
        Ok(rows.iter().map(room_from_row).collect())
    }

    async fn release_room(&self, name: &RoomName) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let cleared = client
            .execute("UPDATE rooms SET node = NULL WHERE name = $1 AND pinned", &[&name.as_str()])
            .await
            .map_err(unavailable)?;
        if cleared > 0 {
            return Ok(true);
        }
        let n = client.execute("DELETE FROM rooms WHERE name = $1", &[&name.as_str()]).await.map_err(unavailable)?;
        Ok(n > 0)
    }

    async fn place_room(&self, name: &RoomName, region: &RegionId, node: &NodeId) -> Result<bool, StoreError> {
        let sql = "UPDATE rooms SET region = $2, node = $3 WHERE name = $1";
        self.changed(sql, &[&name.as_str(), &region.as_str(), &node.as_str()]).await
    }

    async fn heartbeat(&self, n: &NodeRecord) -> Result<(), StoreError> {
        let turn_urls = serde_json::to_value(&n.turn_urls).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let load = serde_json::to_value(n.load).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let (lat, lon) = (n.position.map(|p| p.0), n.position.map(|p| p.1));
        let capacity = i32::try_from(n.capacity).unwrap_or(i32::MAX);
        self.client()
            .await?
            .execute(
                "INSERT INTO nodes (id, region, latitude, longitude, signal_addr, turn_urls, capacity, load, draining, last_seen)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                 ON CONFLICT (id) DO UPDATE SET region = $2, latitude = $3, longitude = $4, signal_addr = $5,
                   turn_urls = $6, capacity = $7, load = $8, draining = $9, last_seen = $10",
                &[
                    &n.id.as_str(),
                    &n.region.as_str(),
                    &lat,
                    &lon,
                    &n.signal_addr,
                    &turn_urls,
                    &capacity,
                    &load,
                    &n.draining,
                    &n.last_seen,
                ],
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT id, region, latitude, longitude, signal_addr, turn_urls, capacity, load, draining, last_seen
                 FROM nodes ORDER BY id",
                &[],
            )
            .await
            .map_err(unavailable)?;
        rows.iter().map(node_from_row).collect()
    }

    async fn remove_node(&self, id: &NodeId) -> Result<bool, StoreError> {
        self.changed("DELETE FROM nodes WHERE id = $1", &[&id.as_str()]).await
    }

    fn is_shared(&self) -> bool {
        true
    }

    async fn delete_room(&self, name: &RoomName) -> Result<bool, StoreError> {
        self.changed("DELETE FROM rooms WHERE name = $1", &[&name.as_str()]).await
    }
}
