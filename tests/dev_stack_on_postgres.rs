//! With a database URL, the stack migrates Postgres and keeps tokens and rooms
//! there. Postgres comes from `DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`); under `CI=true` an unreachable
//! database fails the test, elsewhere it is reported as skipped on stderr.

mod common;

use common::*;

const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

#[tokio::test]
async fn tokens_and_rooms_land_in_postgres() {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.to_string());
    let admin = match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
        Ok((client, conn)) => {
            tokio::spawn(conn);
            client
        }
        Err(e) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!("SKIPPED tokens_and_rooms_land_in_postgres: {url} unreachable ({e})");
            return;
        }
        Err(e) => panic!("CI=true and Postgres at {url} is unreachable: {e}"),
    };
    let schema = format!("devstack_{:016x}", rand::random::<u64>());
    admin.batch_execute(&format!("CREATE SCHEMA {schema}")).await.unwrap();
    let sep = if url.contains('?') { '&' } else { '?' };
    let scoped = format!("{url}{sep}options=-c%20search_path%3D{schema}");

    let stack = stack_with(Some(scoped)).await;
    assert!(stack.on_postgres);
    let token = api_token(&stack, "pg-room", "alice").await;
    let id = meridian_auth::token_id(&token);
    let row = admin
        .query_one(&format!("SELECT room, identity FROM {schema}.tokens WHERE id = $1"), &[&id])
        .await
        .expect("token row");
    assert_eq!((row.get::<_, String>(0), row.get::<_, String>(1)), ("pg-room".into(), "alice".into()));

    let mut ws = connect(&stack, &token).await.unwrap();
    let j = join(&mut ws).await;
    let row = admin
        .query_one(&format!("SELECT sid, region, node FROM {schema}.rooms WHERE name = 'pg-room'"), &[])
        .await
        .expect("room row");
    assert_eq!(row.get::<_, String>(0), j.room.unwrap().sid);
    assert_eq!(row.get::<_, Option<String>>(1).as_deref(), Some("local"));
    drop(ws);
    stack.shutdown().await;
    admin.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).await.unwrap();
}
