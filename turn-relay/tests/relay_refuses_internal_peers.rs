//! The relay with the `turn` crate's client: REST-API credentials allocate; a
//! permission to an allowed peer relays data; permissions to loopback, private
//! and cloud-metadata addresses are refused with 403 before anything is sent;
//! expired or forged credentials allocate nothing. Loopback only: the refused
//! peers are never contacted.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use meridian_auth::turn_rest::mint;
use meridian_turn::policy::PeerPolicy;
use meridian_turn::{TurnConfig, TurnRelay};
use tokio::net::UdpSocket;
use turn::client::{Client, ClientConfig};
use webrtc_util::conn::Conn;

const SECRET: &[u8] = b"region-secret";

async fn relay(allow: &str) -> TurnRelay {
    TurnRelay::start(
        TurnConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            relay_ip: "127.0.0.1".parse().unwrap(),
            realm: "meridian".into(),
            secret: SECRET.to_vec(),
            recv_buffer_bytes: 1 << 20,
            peer_policy: PeerPolicy::new(vec![allow.parse().unwrap()], vec![]),
            tcp_listen: None,
            tls: None,
            max_stream_connections: 16,
            user_quota: 2,
            total_quota: 100,
            bandwidth_cap: None,
        },
        meridian_runtime::Health::new(),
    )
    .await
    .expect("relay starts")
}

async fn client(server: SocketAddr, username: String, password: String) -> Client {
    let conn = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let c = Client::new(ClientConfig {
        stun_serv_addr: server.to_string(),
        turn_serv_addr: server.to_string(),
        username,
        password,
        realm: "meridian".into(),
        software: String::new(),
        rto_in_ms: 100,
        conn,
        vnet: None,
    })
    .await
    .unwrap();
    c.listen().await.unwrap();
    c
}

#[tokio::test]
async fn allowed_peers_are_relayed_and_internal_ones_refused_with_403() {
    // 127.0.0.2 plays the co-located SFU; the rest of loopback stays refused.
    let relay = relay("127.0.0.2/32").await;
    let creds = mint(SECRET, "alice", Duration::from_secs(600), SystemTime::now());
    let c = client(relay.local_addr(), creds.username, creds.password).await;
    let relayed = c.allocate().await.expect("REST credentials allocate");

    let peer = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    relayed.send_to(b"hello", peer.local_addr().unwrap()).await.expect("allowed peer");
    let mut buf = [0u8; 64];
    let (n, from) = tokio::time::timeout(Duration::from_secs(5), peer.recv_from(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf[..n], b"hello");
    assert_eq!(from.ip().to_string(), "127.0.0.1", "data arrives from the relayed address");

    for refused in ["127.0.0.1:9", "10.0.0.1:5000", "192.168.1.1:5000", "169.254.169.254:80", "[::1]:9"] {
        let err = relayed.send_to(b"x", refused.parse().unwrap()).await.expect_err(refused);
        assert!(err.to_string().contains("403"), "{refused}: {err}");
    }
    c.close().await.unwrap();
    relay.close().await.unwrap();
}

#[tokio::test]
async fn expired_and_forged_credentials_allocate_nothing() {
    let relay = relay("127.0.0.2/32").await;
    let expired = mint(SECRET, "alice", Duration::from_secs(60), SystemTime::now() - Duration::from_secs(3600));
    let c = client(relay.local_addr(), expired.username, expired.password).await;
    let err = c.allocate().await.err().expect("an expired credential is refused");
    assert!(err.to_string().contains("401"), "{err}");
    c.close().await.unwrap();

    let forged = mint(b"another-secret", "mallory", Duration::from_secs(600), SystemTime::now());
    let c = client(relay.local_addr(), forged.username, forged.password).await;
    let err = c.allocate().await.err().expect("a credential signed with another secret is refused");
    assert!(err.to_string().contains("401"), "a wrong password is 401, as coturn answers: {err}");
    c.close().await.unwrap();
    relay.close().await.unwrap();
}
