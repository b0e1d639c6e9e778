//! SDP helpers the targets share: non-trickle offers and answers.

use std::time::Duration;

use anyhow::Context;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::peer_connection::RTCPeerConnection;

/// Sets `description` as local and returns it once ICE gathering is complete, so
/// that it carries every candidate (no trickle).
pub(crate) async fn gathered(
    pc: &RTCPeerConnection,
    description: RTCSessionDescription,
) -> anyhow::Result<RTCSessionDescription> {
    let mut done = pc.gathering_complete_promise().await;
    pc.set_local_description(description).await?;
    tokio::time::timeout(Duration::from_secs(10), done.recv())
        .await
        .context("ICE gathering did not complete in 10 s")?;
    pc.local_description().await.context("no local description")
}
