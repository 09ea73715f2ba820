//! A small in-memory Kubernetes API server for reconcile tests: objects by
//! path; get, list (with label selectors), server-side apply (with
//! `/status`), JSON patch (as kube's finalizer helper sends), create,
//! replace (a compare-and-swap on the resourceVersion), delete (with a uid
//! precondition; an object with finalizers only gets its deletion
//! timestamp, and goes when the last one is removed); every request
//! recorded; failures injected on request.

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// One request as tests assert it, e.g. `apply statefulsets/demo replicas=4`.
pub type Call = String;

#[derive(Debug, Default)]
struct State {
    objects: BTreeMap<String, Value>,
    calls: Vec<Call>,
    fail: Vec<(String, StatusCode)>,
    next_uid: u64,
}

/// The fake server; clones share it.
#[derive(Clone, Debug, Default)]
pub struct ApiServer {
    state: Arc<Mutex<State>>,
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16(),
    });
    Response::builder()
        .status(code)
        .body(Body::from(body.to_string().into_bytes()))
        .expect("response")
}

fn ok(value: &Value) -> Response<Body> {
    Response::builder()
        .status(StatusCode::OK)
        .body(Body::from(value.to_string().into_bytes()))
        .expect("response")
}

/// The last path segment's plural ("statefulsets") and the object name.
fn short(path: &str) -> String {
    let parts: Vec<&str> = path
        .trim_end_matches("/status")
        .rsplit('/')
        .take(2)
        .collect();
    match parts.as_slice() {
        [name, plural] => format!("{plural}/{name}"),
        _ => path.to_string(),
    }
}

fn labels_match(object: &Value, selector: &str) -> bool {
    selector.split(',').filter(|s| !s.is_empty()).all(|term| {
        let (k, v) = term.split_once('=').unwrap_or((term, ""));
        object["metadata"]["labels"][k].as_str() == Some(v)
    })
}

fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| {
            v.replace("%3D", "=")
                .replace("%2C", ",")
                .replace("%2F", "/")
        })
    })
}

impl ApiServer {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("api server lock")
    }

    /// A client whose requests this server answers (on a task of its own).
    pub fn client(&self) -> kube::Client {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let server = self.clone();
        tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                let response = server.handle(request).await;
                send.send_response(response);
            }
        });
        kube::Client::new(service, "default")
    }

    /// Every request since the last [`ApiServer::take_calls`].
    pub fn take_calls(&self) -> Vec<Call> {
        std::mem::take(&mut self.lock().calls)
    }

    /// The next request whose description starts with `prefix` fails with a 500.
    pub fn fail_next(&self, prefix: &str) {
        self.lock()
            .fail
            .push((prefix.to_string(), StatusCode::INTERNAL_SERVER_ERROR));
    }

    /// The next request whose description starts with `prefix` gets a 409
    /// Conflict, as when another writer got there first.
    pub fn conflict_next(&self, prefix: &str) {
        self.lock()
            .fail
            .push((prefix.to_string(), StatusCode::CONFLICT));
    }

    /// The object at `path`.
    pub fn get(&self, path: &str) -> Option<Value> {
        self.lock().objects.get(path).cloned()
    }

    /// Objects under the collection `prefix` (e.g. `/api/v1/namespaces/prod/pods`).
    pub fn list(&self, prefix: &str) -> Vec<(String, Value)> {
        let prefix = format!("{prefix}/");
        self.lock()
            .objects
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix) && !k[prefix.len()..].contains('/'))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Stores `object` at `path` (as a controller or kubelet would), with a uid.
    pub fn put(&self, path: &str, mut object: Value) {
        let mut s = self.lock();
        if object["metadata"]["uid"].is_null() {
            s.next_uid += 1;
            object["metadata"]["uid"] = json!(format!("uid-{}", s.next_uid));
        }
        s.objects.insert(path.to_string(), object);
    }

    /// Removes the object at `path`.
    pub fn remove(&self, path: &str) -> Option<Value> {
        self.lock().objects.remove(path)
    }

    async fn handle(&self, request: Request<Body>) -> Response<Body> {
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        let query = request.uri().query().unwrap_or_default().to_string();
        let json_patch = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|c| c.as_bytes() == b"application/json-patch+json");
        let body = request
            .into_body()
            .collect_bytes()
            .await
            .expect("request body");
        let body: Value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body).expect("JSON request body")
        };
        let call = self.describe(&method, &path, &query, &body);
        let mut s = self.lock();
        s.calls.push(call.clone());
        if let Some(i) = s
            .fail
            .iter()
            .position(|(p, _)| call.starts_with(p.as_str()))
        {
            let (_, code) = s.fail.remove(i);
            return status(code, "Injected", "injected failure");
        }
        drop(s);
        match method {
            Method::GET if self.get(&path).is_some() => ok(&self.get(&path).unwrap_or_default()),
            Method::GET if call.starts_with("list") => {
                let selector = query_param(&query, "labelSelector").unwrap_or_default();
                let items: Vec<Value> = self
                    .list(&path)
                    .into_iter()
                    .map(|(_, v)| v)
                    .filter(|v| labels_match(v, &selector))
                    .collect();
                ok(
                    &json!({"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": items}),
                )
            }
            Method::GET => status(StatusCode::NOT_FOUND, "NotFound", "not found"),
            Method::PATCH if path.ends_with("/status") => {
                let object_path = path.trim_end_matches("/status");
                let mut s = self.lock();
                match s.objects.get_mut(object_path) {
                    Some(object) => {
                        object["status"] = body["status"].clone();
                        ok(object)
                    }
                    None => status(StatusCode::NOT_FOUND, "NotFound", "not found"),
                }
            }
            Method::PATCH if json_patch => self.json_patch(&path, body),
            Method::PATCH => ok(&self.apply(&path, body)),
            Method::DELETE => {
                let want = body["preconditions"]["uid"].as_str().map(str::to_string);
                match self.get(&path) {
                    None => status(StatusCode::NOT_FOUND, "NotFound", "not found"),
                    Some(o)
                        if want.is_some() && o["metadata"]["uid"].as_str() != want.as_deref() =>
                    {
                        status(StatusCode::CONFLICT, "Conflict", "uid precondition failed")
                    }
                    Some(o) => ok(&self.delete(&path).unwrap_or(o)),
                }
            }
            Method::POST => {
                let name = body["metadata"]["name"]
                    .as_str()
                    .unwrap_or("event")
                    .to_string();
                let path = format!("{path}/{name}");
                if self.get(&path).is_some() {
                    return status(StatusCode::CONFLICT, "AlreadyExists", "already exists");
                }
                let mut object = body;
                object["metadata"]["resourceVersion"] = json!("1");
                self.put(&path, object.clone());
                ok(&object)
            }
            // Replace: a compare-and-swap on metadata.resourceVersion.
            Method::PUT => match self.get(&path) {
                None => status(StatusCode::NOT_FOUND, "NotFound", "not found"),
                Some(old)
                    if old["metadata"]["resourceVersion"]
                        != body["metadata"]["resourceVersion"] =>
                {
                    status(
                        StatusCode::CONFLICT,
                        "Conflict",
                        "the object has been modified",
                    )
                }
                Some(old) => {
                    let version = old["metadata"]["resourceVersion"]
                        .as_str()
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0);
                    let mut object = body;
                    object["metadata"]["resourceVersion"] = json!((version + 1).to_string());
                    self.put(&path, object.clone());
                    ok(&object)
                }
            },
            _ => status(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "unsupported",
            ),
        }
    }

    /// Deletes the object at `path` as the API server does: one with
    /// finalizers gets a deletion timestamp and stays until they are gone.
    /// Returns the object as it is after the call.
    pub fn delete(&self, path: &str) -> Option<Value> {
        let mut s = self.lock();
        let object = s.objects.get_mut(path)?;
        let finalizers = object["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        if finalizers {
            if object["metadata"]["deletionTimestamp"].is_null() {
                object["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
            }
            return Some(object.clone());
        }
        s.objects.remove(path)
    }

    /// A JSON patch (RFC 6902); a failed `test` is a 422, as the API
    /// server answers it. The object goes once it is being deleted and its
    /// last finalizer is removed.
    fn json_patch(&self, path: &str, body: Value) -> Response<Body> {
        let mut s = self.lock();
        let Some(object) = s.objects.get_mut(path) else {
            return status(StatusCode::NOT_FOUND, "NotFound", "not found");
        };
        let mut patch: json_patch::Patch = match serde_json::from_value(body) {
            Ok(p) => p,
            Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", &e.to_string()),
        };
        // The API server's JSON patch takes `test` of null on a missing
        // path as passing (kube's finalizer helper relies on it).
        patch.0.retain(|op| match op {
            json_patch::PatchOperation::Test(t) => {
                !(t.value.is_null() && object.pointer(t.path.as_str()).is_none())
            }
            _ => true,
        });
        let mut patched = object.clone();
        if let Err(e) = json_patch::patch(&mut patched, &patch) {
            return status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", &e.to_string());
        }
        let version = patched["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        patched["metadata"]["resourceVersion"] = json!((version + 1).to_string());
        let gone = !patched["metadata"]["deletionTimestamp"].is_null()
            && patched["metadata"]["finalizers"]
                .as_array()
                .is_none_or(|f| f.is_empty());
        if gone {
            s.objects.remove(path);
        } else {
            *object = patched.clone();
        }
        ok(&patched)
    }

    /// Server-side apply, as far as one field manager needs: the applied
    /// object replaces the old one's spec and metadata, the status stays,
    /// and `metadata.generation` moves when the spec changed.
    fn apply(&self, path: &str, body: Value) -> Value {
        let mut s = self.lock();
        let old = s.objects.get(path).cloned();
        let mut object = body;
        let generation = match &old {
            Some(o) if o["spec"] == object["spec"] => {
                o["metadata"]["generation"].as_i64().unwrap_or(1)
            }
            Some(o) => o["metadata"]["generation"].as_i64().unwrap_or(1) + 1,
            None => 1,
        };
        object["metadata"]["generation"] = json!(generation);
        match &old {
            Some(o) => {
                object["metadata"]["uid"] = o["metadata"]["uid"].clone();
                if !o["status"].is_null() {
                    object["status"] = o["status"].clone();
                }
            }
            None => {
                s.next_uid += 1;
                object["metadata"]["uid"] = json!(format!("uid-{}", s.next_uid));
            }
        }
        s.objects.insert(path.to_string(), object.clone());
        object
    }

    fn describe(&self, method: &Method, path: &str, query: &str, body: &Value) -> Call {
        // After `/namespaces/<ns>/`: `<plural>` is a collection, `<plural>/<name>` an object.
        let is_collection = path
            .split_once("/namespaces/")
            .map(|(_, rest)| rest.split('/').count() == 2)
            .unwrap_or(false);
        match *method {
            Method::GET if is_collection => {
                format!("list {}", path.rsplit('/').next().unwrap_or_default())
            }
            Method::GET => format!("get {}", short(path)),
            Method::PATCH if path.ends_with("/status") => format!("status {}", short(path)),
            Method::PATCH if path.contains("/statefulsets/") => {
                format!(
                    "apply {} replicas={}",
                    short(path),
                    body["spec"]["replicas"]
                )
            }
            Method::PATCH if body.is_array() => format!("patch {}", short(path)),
            Method::PATCH => format!("apply {}", short(path)),
            Method::DELETE => format!("delete {}", short(path)),
            Method::POST if path.ends_with("/events") => {
                format!("event {}", body["reason"].as_str().unwrap_or_default())
            }
            Method::POST => format!(
                "create {}/{}",
                path.rsplit('/').next().unwrap_or_default(),
                body["metadata"]["name"].as_str().unwrap_or_default()
            ),
            Method::PUT => format!("replace {}", short(path)),
            _ => format!("{method} {path}?{query}"),
        }
    }
}
