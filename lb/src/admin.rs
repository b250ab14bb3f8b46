//! The admin listener: `/stats` (HTML), `/metrics` (Prometheus),
//! `GET /api/backends`, `GET /api/frontends` and `GET /api/sources` (JSON)
//! and `POST /api/backends/SERVER/state` with
//! `{"state":"ready|drain|maint"}` — HAProxy's stats page and runtime API
//! for this job. Each server lists the hash keys its open sessions were
//! placed by (`balance = "hash"`), busiest first, at most [`KEYS_SHOWN`].
//! Every request must name this listener and come from no other site
//! (`guard`); a bearer token, when configured, guards all of it.

mod guard;
mod sources;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Deserialize;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::drain::Drain;
use crate::metrics::{self, CLASSES};
use crate::runtime::Runtime;
use crate::stats_page;
use crate::upstream::{AdminState, Backend, Server};

/// Largest request body accepted by the admin API.
const MAX_BODY: usize = 4096;

/// Hash keys listed per server (those with the most sessions); the count
/// of all of them is given beside.
pub const KEYS_SHOWN: usize = 100;

/// Body of `POST /api/backends/SERVER/state`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateRequest {
    /// `ready`, `drain` or `maint`.
    state: String,
}

/// Serves the admin API on `listener` until the lb stops.
pub async fn serve(listener: TcpListener, runtime: watch::Receiver<Arc<Runtime>>, drain: Drain) {
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = drain.stopping() => return,
        };
        let runtime = runtime.clone();
        let Ok(local) = tcp.local_addr() else { continue };
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let rt = runtime.borrow().clone();
                async move { Ok::<_, Infallible>(route(req, rt, peer, local).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(tcp), svc);
            if let Err(e) = conn.await {
                tracing::debug!(client = %peer, error = %e, "admin connection error");
            }
        });
    }
}

type AdminResponse = Response<Full<Bytes>>;

fn respond(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> AdminResponse {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

fn json_response(status: StatusCode, v: &Value) -> AdminResponse {
    respond(status, "application/json", v.to_string())
}

fn error(status: StatusCode, msg: &str) -> AdminResponse {
    json_response(status, &json!({ "error": msg }))
}

fn authorized(req: &Request<Incoming>, token: Option<&str>) -> bool {
    let Some(token) = token else { return true };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    bool::from(given.as_bytes().ct_eq(token.as_bytes()))
}

async fn route(
    req: Request<Incoming>,
    rt: Arc<Runtime>,
    peer: SocketAddr,
    local: SocketAddr,
) -> AdminResponse {
    let listener = guard::Listener {
        local,
        names: &rt.config.admin.hosts,
    };
    if let Err(refused) = listener.check(req.method(), req.uri(), req.headers()) {
        tracing::warn!(admin_client = %peer, method = %req.method(), path = %req.uri().path(), reason = %refused, "admin request refused");
        return error(StatusCode::FORBIDDEN, &refused.to_string());
    }
    if !authorized(&req, rt.admin_token.as_deref()) {
        let mut r = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    }
    let path = req.uri().path().to_string();
    match (req.method().clone(), path.as_str()) {
        (Method::GET, "/stats") | (Method::GET, "/") => respond(
            StatusCode::OK,
            "text/html; charset=utf-8",
            stats_page::render(&rt),
        ),
        (Method::GET, "/metrics") => match metrics::render(&rt) {
            Ok(text) => respond(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", text),
            Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "metrics encoding failed"),
        },
        (Method::GET, "/api/backends") => json_response(StatusCode::OK, &backends_json(&rt)),
        (Method::GET, "/api/frontends") => json_response(StatusCode::OK, &frontends_json(&rt)),
        (Method::GET, "/api/sources") => match sources::query(req.uri().query()) {
            Ok((top, by)) => json_response(StatusCode::OK, &sources::sources_json(&rt, top, by)),
            Err(e) => error(StatusCode::BAD_REQUEST, &e),
        },
        (Method::POST, p) => match p
            .strip_prefix("/api/backends/")
            .and_then(|rest| rest.strip_suffix("/state"))
        {
            Some(name) => set_state(req, &rt, name.to_string(), peer).await,
            None => error(StatusCode::NOT_FOUND, "not found"),
        },
        _ => error(StatusCode::NOT_FOUND, "not found"),
    }
}

async fn set_state(req: Request<Incoming>, rt: &Runtime, name: String, peer: SocketAddr) -> AdminResponse {
    let Some(server) = rt.server(&name) else {
        return error(StatusCode::NOT_FOUND, &format!("no server named {name:?}"));
    };
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return error(StatusCode::BAD_REQUEST, "body unreadable or too large"),
    };
    let wanted: StateRequest = match serde_json::from_slice(&body) {
        Ok(w) => w,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("expected {{\"state\":\"ready|drain|maint\"}}: {e}"),
            )
        }
    };
    let admin = match wanted.state.as_str() {
        "ready" => AdminState::Ready,
        "drain" => AdminState::Drain,
        "maint" => AdminState::Maint,
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("unknown state {other:?}; use ready, drain or maint"),
            )
        }
    };
    tracing::info!(server = %name, state = %wanted.state, admin_client = %peer, "admin state change requested");
    server.set_admin(admin);
    let backend = rt.backends.iter().find(|b| b.server(&name).is_some());
    match backend {
        Some(b) => json_response(StatusCode::OK, &server_json(b, server)),
        None => error(StatusCode::NOT_FOUND, "server vanished"),
    }
}

/// `{"frontends":[{"name":…,"connections":…,"tls_handshakes":…,"request_errors":…,
/// "limited":{…},"proxy_refused":{…}}]}`, in name order.
pub fn frontends_json(rt: &Runtime) -> Value {
    let mut frontends: Vec<_> = rt.frontends.iter().collect();
    frontends.sort_by(|a, b| a.1.name.cmp(&b.1.name));
    let frontends: Vec<Value> = frontends
        .into_iter()
        .map(|(addr, f)| {
            let c = &f.counters;
            json!({
                "name": f.name,
                "listen": addr.to_string(),
                "tls": f.tls.is_some(),
                "connections": c.connections.load(Ordering::Relaxed),
                "tls_handshakes": c.tls_handshakes.load(Ordering::Relaxed),
                "request_errors": c.request_errors.load(Ordering::Relaxed),
                "limited": sources::by_limit(c.limited_by_kind()),
                "proxy_refused": c
                    .proxy_refused_by_reason()
                    .map(|(r, n)| (r.as_str().to_string(), json!(n)))
                    .collect::<serde_json::Map<_, _>>(),
            })
        })
        .collect();
    json!({ "frontends": frontends })
}

/// `{"backends":[{"name":…,"servers":[…]}]}`.
pub fn backends_json(rt: &Runtime) -> Value {
    let backends: Vec<Value> = rt
        .backends
        .iter()
        .map(|b| {
            json!({
                "name": b.name,
                "balance": format!("{:?}", b.balance).to_lowercase(),
                "hash_key": b.hashing.as_ref().map(|h| h.key.to_string()),
                "hash_balance_factor": b.hashing.as_ref().map(|h| h.factor),
                "hash_stick": b.hashing.as_ref().map(|h| h.stick),
                "servers": b.servers.iter().map(|s| server_json(b, s)).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({ "backends": backends })
}

fn server_json(b: &Backend, s: &Server) -> Value {
    let v = s.view();
    let c = &s.shared.counters;
    let responses: serde_json::Map<String, Value> = CLASSES
        .iter()
        .zip(&c.responses)
        .map(|(k, n)| ((*k).to_string(), json!(n.load(Ordering::Relaxed))))
        .collect();
    let (keys, distinct_keys) = c.keys.top(KEYS_SHOWN);
    let keys: Vec<Value> = keys
        .iter()
        .map(|(k, n)| json!({ "key": &**k, "sessions": n }))
        .collect();
    let check = match (&b.check, &v.last_check) {
        (None, _) => json!({ "enabled": false, "status": "none" }),
        (Some(cfg), last) => json!({
            "enabled": true,
            "status": last.as_ref().map_or("INI", |r| r.status.as_str()),
            "code": last.as_ref().and_then(|r| r.code),
            "detail": last.as_ref().map_or("", |r| r.detail.as_str()),
            "health": v.health,
            "rise": cfg.rise,
            "fall": cfg.fall,
            "path": cfg.path,
        }),
    };
    json!({
        "name": s.name,
        "addr": s.addr.to_string(),
        "state": v.state.as_str(),
        "weight": s.weight,
        "effective_weight": s.effective_weight(),
        "backup": s.backup,
        "sessions": s.sessions(),
        "max_sessions": c.max_sessions.load(Ordering::Relaxed),
        "total_sessions": c.total_sessions.load(Ordering::Relaxed),
        "bytes_in": c.bytes_in.load(Ordering::Relaxed),
        "bytes_out": c.bytes_out.load(Ordering::Relaxed),
        "connect_errors": c.connect_errors.load(Ordering::Relaxed),
        "on_marked_down": s.reactions.on_marked_down.as_str(),
        "on_error": s.reactions.on_error.as_str(),
        "error_limit": s.reactions.error_limit,
        "responses": responses,
        "hash_keys": keys,
        "hash_keys_total": distinct_keys,
        "check": check,
        "last_change_secs": v.since_change.as_secs(),
    })
}
