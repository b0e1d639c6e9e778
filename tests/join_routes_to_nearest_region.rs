//! Three regions on loopback and a City database built here: clients behind a
//! trusted proxy land in their nearest region, an untrusted X-Forwarded-For is
//! ignored, a live room keeps later joiners on its node, stale and draining nodes
//! get no new rooms, and `/v1/route` says why.

mod common;

use std::path::PathBuf;

use common::*;
use livekit_protocol::signal_request::Message as In;
use meridian::{DevOptions, DevRegion, DevStack};
use meridian_schema::{NodeLoad, NodeRecord};
use serde::Serialize;

const LONDON_IP: &str = "81.2.69.142";
const SEATTLE_IP: &str = "4.14.1.2";
const SINGAPORE_IP: &str = "175.156.1.2";
const SYDNEY_IP: &str = "1.120.3.4";

#[derive(Serialize)]
struct City {
    location: Location,
    country: Country,
}

#[derive(Serialize)]
struct Location {
    latitude: f64,
    longitude: f64,
    accuracy_radius: u16,
}

#[derive(Serialize)]
struct Country {
    iso_code: &'static str,
}

/// A GeoIP2-layout City database with London, Seattle, Singapore and Sydney.
fn city_db() -> PathBuf {
    let mut w = mmdb_writer::Writer::new("Meridian-Test-City");
    for (net, lat, lon, cc) in [
        ("81.2.69.0/24", 51.5142, -0.0931, "GB"),
        ("4.14.0.0/16", 47.6062, -122.3321, "US"),
        ("175.156.0.0/16", 1.2897, 103.8501, "SG"),
        ("1.120.0.0/16", -33.8688, 151.2093, "AU"),
    ] {
        let city = City {
            location: Location { latitude: lat, longitude: lon, accuracy_radius: 50 },
            country: Country { iso_code: cc },
        };
        w.insert(net.parse::<ipnet::IpNet>().unwrap(), &city).unwrap();
    }
    let path =
        std::env::temp_dir().join(format!("meridian-city-{}-{}.mmdb", std::process::id(), rand::random::<u32>()));
    std::fs::write(&path, w.to_bytes().unwrap()).unwrap();
    path
}

async fn three_regions(trust_loopback: bool) -> (DevStack, PathBuf) {
    let db = city_db();
    let stack = meridian::start_dev(DevOptions {
        regions: vec![
            "eu-west@51.51,-0.13".parse::<DevRegion>().unwrap(),
            "us-west@47.61,-122.33".parse().unwrap(),
            "ap-southeast@1.35,103.82".parse().unwrap(),
        ],
        default_region: Some("us-west".into()),
        geoip_db: Some(db.clone()),
        trusted_proxies: if trust_loopback { vec!["127.0.0.0/8".parse().unwrap()] } else { vec![] },
        ..options()
    })
    .await
    .expect("three regions start");
    (stack, db)
}

async fn landed(stack: &DevStack, room: &str, identity: &str, from: &str) -> (Ws, String, String) {
    let token = api_token(stack, room, identity).await;
    let mut ws = connect_from(stack, &token, Some(from)).await.expect("admitted");
    let info = join(&mut ws).await.server_info.expect("server_info");
    (ws, info.region, info.node_id)
}

#[tokio::test]
async fn clients_behind_a_trusted_proxy_land_in_their_nearest_region() {
    let (stack, db) = three_regions(true).await;
    for (ip, region) in
        [(LONDON_IP, "eu-west"), (SEATTLE_IP, "us-west"), (SINGAPORE_IP, "ap-southeast"), (SYDNEY_IP, "ap-southeast")]
    {
        let (_ws, got, node) = landed(&stack, &format!("room-{ip}"), "someone", ip).await;
        assert_eq!((got.as_str(), node), (region, format!("{region}-1")), "a client at {ip}");
    }
    let (_ws, got, _) = landed(&stack, "room-private", "someone", "10.1.2.3").await;
    assert_eq!(got, "us-west", "a private address goes to the default region");
    stack.shutdown().await;
    std::fs::remove_file(db).ok();
}

#[tokio::test]
async fn an_untrusted_x_forwarded_for_is_ignored() {
    let (stack, db) = three_regions(false).await;
    let (_ws, got, _) = landed(&stack, "spoof", "mallory", LONDON_IP).await;
    assert_eq!(got, "us-west", "the loopback peer is unlocatable, whatever the header says");
    stack.shutdown().await;
    std::fs::remove_file(db).ok();
}

#[tokio::test]
async fn later_joiners_follow_a_live_room_and_route_explains_it() {
    let (stack, db) = three_regions(true).await;
    let auth = basic_auth(KEY, SECRET);
    let v = route_of(&stack, &format!("ip={SINGAPORE_IP}&room=standup")).await;
    assert_eq!((v["region"].as_str(), v["reason"].as_str()), (Some("ap-southeast"), Some("nearest")), "{v}");
    assert_eq!(v["located"]["country"], "SG");
    let candidates = v["candidates"].as_array().unwrap();
    assert_eq!(candidates.len(), 3);
    let london = candidates.iter().find(|c| c["region"] == "eu-west").unwrap();
    let km = london["distance_km"].as_f64().unwrap();
    assert!((10_500.0..11_100.0).contains(&km), "Singapore-London is ~10 850 km, got {km}");
    assert_eq!(london["chosen"], false);
    assert!(london["why"].as_str().unwrap().contains("farther than ap-southeast"), "{london}");

    let (mut alice, region, _) = landed(&stack, "standup", "alice", LONDON_IP).await;
    assert_eq!(region, "eu-west");
    let (mut bob, region, _) = landed(&stack, "standup", "bob", SINGAPORE_IP).await;
    assert_eq!(region, "eu-west", "bob joins the room where it lives, not his nearest region");
    let v = route_of(&stack, &format!("ip={SINGAPORE_IP}&room=standup")).await;
    assert_eq!((v["node"].as_str(), v["reason"].as_str()), (Some("eu-west-1"), Some("room_affinity")), "{v}");

    for ws in [&mut alice, &mut bob] {
        send(ws, In::Leave(Default::default())).await;
        while recv(ws).await.is_some() {}
    }
    // The empty room is gone; the next joiner is placed afresh.
    eventually("the room record is removed when the room empties", || async {
        stack.store.room(&"standup".into()).await.unwrap().is_none()
    })
    .await;
    let (_carol, region, _) = landed(&stack, "standup", "carol", SINGAPORE_IP).await;
    assert_eq!(region, "ap-southeast");

    let (status, _) = http(stack.gateway_addr, "GET", "/v1/route?ip=nope", &[("authorization", &auth)], "").await;
    assert_eq!(status, 400);
    let (status, _) = http(stack.gateway_addr, "GET", &format!("/v1/route?ip={LONDON_IP}"), &[], "").await;
    assert_eq!(status, 401);
    stack.shutdown().await;
    std::fs::remove_file(db).ok();
}

async fn route_of(stack: &DevStack, query: &str) -> serde_json::Value {
    let auth = basic_auth(KEY, SECRET);
    let (status, body) =
        http(stack.gateway_addr, "GET", &format!("/v1/route?{query}"), &[("authorization", &auth)], "").await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test]
async fn a_stale_node_gets_no_joins_and_a_draining_one_no_new_rooms() {
    let (stack, db) = three_regions(true).await;
    // A node in London itself, last heard from a minute ago.
    let ghost = |seen: std::time::SystemTime| NodeRecord {
        id: "uk-south-1".into(),
        region: "uk-south".into(),
        position: Some((51.50, -0.12)),
        signal_addr: "127.0.0.1:9".into(),
        turn_urls: vec![],
        capacity: 500,
        load: NodeLoad::default(),
        draining: false,
        last_seen: seen,
    };
    let minute_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
    stack.store.heartbeat(&ghost(minute_ago)).await.unwrap();
    let v = route_of(&stack, &format!("ip={LONDON_IP}")).await;
    assert_eq!(v["region"], "eu-west", "{v}");
    let uk = v["candidates"].as_array().unwrap().iter().find(|c| c["region"] == "uk-south").unwrap();
    assert_eq!(
        (uk["why"].as_str(), uk["nodes"][0]["state"].as_str()),
        (Some("no healthy node"), Some("stale")),
        "{uk}"
    );
    let (_ws, region, _) = landed(&stack, "ghost-check", "alice", LONDON_IP).await;
    assert_eq!(region, "eu-west", "the join avoids the stale node");
    // The same node heard from now would win: staleness is what kept it out.
    stack.store.heartbeat(&ghost(std::time::SystemTime::now())).await.unwrap();
    assert_eq!(route_of(&stack, &format!("ip={LONDON_IP}")).await["region"], "uk-south");
    stack.store.remove_node(&"uk-south-1".into()).await.unwrap();

    // Draining: eu-west keeps its live room but takes no new one.
    stack.drain_region(&"eu-west".into()).await.unwrap();
    let v = route_of(&stack, &format!("ip={LONDON_IP}&room=ghost-check")).await;
    assert_eq!((v["node"].as_str(), v["reason"].as_str()), (Some("eu-west-1"), Some("room_affinity")), "{v}");
    let (_ws2, region, _) = landed(&stack, "ghost-check", "bob", LONDON_IP).await;
    assert_eq!(region, "eu-west", "a draining node still takes joiners of its live rooms");
    let (_ws3, region, _) = landed(&stack, "fresh-room", "carol", LONDON_IP).await;
    assert_eq!(region, "us-west", "a new room goes to the nearest node that is not draining");
    stack.shutdown().await;
    std::fs::remove_file(db).ok();
}

#[tokio::test]
async fn a_room_pinned_to_a_region_takes_its_joiners_there() {
    let (stack, db) = three_regions(true).await;
    let auth = basic_auth(KEY, SECRET);
    let post = |body: &'static str| {
        let auth = auth.clone();
        let addr = stack.gateway_addr;
        async move {
            let headers = [("authorization", auth.as_str()), ("content-type", "application/json")];
            let (status, body) = http(addr, "POST", "/v1/rooms", &headers, body).await;
            (status, serde_json::from_str::<serde_json::Value>(&body).unwrap())
        }
    };
    let (status, v) = post(r#"{"name":"asia-standup","region":"ap-southeast"}"#).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!((v["region"].as_str(), v["pinned"].as_bool()), (Some("ap-southeast"), Some(true)));
    let (status, v) = post(r#"{"name":"x","region":"mars-north"}"#).await;
    assert_eq!(status, 400, "an unknown region is refused: {v}");
    assert!(v["error"].as_str().unwrap().contains("region"));

    let (mut ws, region, _) = landed(&stack, "asia-standup", "alice", LONDON_IP).await;
    assert_eq!(region, "ap-southeast", "a Londoner joins the pinned room in its region");
    send(&mut ws, In::Leave(Default::default())).await;
    while recv(&mut ws).await.is_some() {}
    let released = || async {
        stack
            .store
            .room(&"asia-standup".into())
            .await
            .unwrap()
            .expect("a pinned room outlives its session")
            .node
            .is_none()
    };
    eventually("the node is released when the room empties", released).await;
    let kept = stack.store.room(&"asia-standup".into()).await.unwrap().expect("a pinned room outlives its session");
    assert_eq!((kept.region, kept.pinned), (Some("ap-southeast".into()), true));
    let (_ws, region, _) = landed(&stack, "asia-standup", "bob", SEATTLE_IP).await;
    assert_eq!(region, "ap-southeast", "the pin holds for the next session");
    stack.shutdown().await;
    std::fs::remove_file(db).ok();
}
