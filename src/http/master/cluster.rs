//! `GET /cluster` (operators): the masters sharing this master's store,
//! which one leads (and so runs every shard of monitors and the flood
//! guard), and its lease. A master on SQLite is a cluster of one.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::MasterApi;
use crate::http::ApiError;

pub(super) async fn get_cluster(api: web::Data<MasterApi>) -> Result<HttpResponse, ApiError> {
    let shards: Vec<usize> = (0..api.shards).collect();
    let Some(cluster) = &api.cluster else {
        return Ok(HttpResponse::Ok().json(json!({
            "clustered": false,
            "store": "sqlite",
            "masters": [{ "self": true, "leader": true, "shards": shards }],
        })));
    };
    let me = cluster.view.get().me;
    let (members, lease, now) = api.store.cluster_view().await?;
    let live = lease.as_ref().filter(|l| l.expires > now);
    let masters: Vec<_> = members
        .iter()
        .map(|m| {
            let leads = live.is_some_and(|l| l.holder == m.id);
            json!({
                "id": m.id,
                "url": m.url,
                "self": m.id == me,
                "started": m.started,
                "lastSeenAgoMs": now - m.seen,
                "leader": leads,
                "shards": if leads { shards.clone() } else { Vec::new() },
            })
        })
        .collect();
    let lease = lease.map(|l| {
        json!({
            "holder": l.holder,
            "url": l.url,
            "epoch": l.epoch,
            "heldForMs": now - l.acquired,
            "renewedAgoMs": now - l.renewed,
            "expiresInMs": l.expires - now,
        })
    });
    Ok(HttpResponse::Ok().json(json!({
        "clustered": true,
        "store": "postgresql",
        "leaseMs": cluster.lease.as_millis() as u64,
        "lease": lease,
        "masters": masters,
    })))
}
