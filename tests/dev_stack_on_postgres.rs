//! With a database URL, the stack migrates Postgres and keeps tokens and rooms
//! there. Postgres comes from `DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`); under `CI=true` an unreachable
//! database fails the test, elsewhere it is reported as skipped on stderr.

mod common;

use common::*;

#[tokio::test]
async fn tokens_and_rooms_land_in_postgres() {
    let Some(pg) = scoped_postgres("tokens_and_rooms_land_in_postgres", "devstack").await else { return };
    let (admin, schema) = (&pg.admin, pg.schema.clone());
    let stack = stack_with(Some(pg.url.clone())).await;
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
    pg.drop_schema().await;
}
