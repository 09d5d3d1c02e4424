//! The generated OpenAPI document lists every route of the table, with its
//! method, parameters, bodies and error answers, and holds together as JSON.

use api::routes::{Body, Method, ROUTES};
use serde_json::Value;
use std::collections::BTreeSet;

fn document() -> Value {
    serde_json::to_value(api::openapi()).unwrap()
}

fn operation<'a>(doc: &'a Value, route: &api::routes::Route) -> &'a Value {
    let method = route.method.as_str().to_ascii_lowercase();
    let op = &doc["paths"][route.path][method.as_str()];
    assert!(
        op.is_object(),
        "the document lacks {} {}",
        route.method,
        route.path
    );
    op
}

#[test]
fn every_route_is_in_the_document_with_its_method() {
    let doc = document();
    for route in ROUTES {
        let op = operation(&doc, route);
        assert_eq!(op["operationId"], route.operation_id);
        assert_eq!(op["summary"], route.summary);
        assert!(op["responses"]["200"]["content"]["application/json"]["schema"].is_object());
    }
    let listed: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|item| item.as_object().unwrap().len())
        .sum();
    assert_eq!(listed, ROUTES.len(), "operations the table does not have");
}

#[test]
fn the_document_round_trips_as_json() {
    let doc = api::openapi();
    let text = doc.to_pretty_json().unwrap();
    // Read back as an OpenAPI document, it writes the same JSON again.
    let back: utoipa::openapi::OpenApi = serde_json::from_str(&text).unwrap();
    assert_eq!(
        serde_json::to_value(&back).unwrap(),
        serde_json::to_value(&doc).unwrap()
    );
    let value: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(value, document());
    assert_eq!(value["openapi"], "3.1.0");
}

#[test]
fn routes_are_unique_and_well_formed() {
    let mut seen = BTreeSet::new();
    let mut ids = BTreeSet::new();
    for r in ROUTES {
        assert!(
            seen.insert((r.method.as_str(), r.path)),
            "{} {} twice",
            r.method,
            r.path
        );
        assert!(
            ids.insert(r.operation_id),
            "operation id {} twice",
            r.operation_id
        );
        assert!(r.path.starts_with("/v1/"), "{}", r.path);
        if r.method == Method::Delete || r.method == Method::Get {
            assert!(
                matches!(r.body, Body::None),
                "{} {} has a body",
                r.method,
                r.path
            );
        }
    }
}

#[test]
fn path_and_query_parameters_are_declared() {
    let doc = document();
    for route in ROUTES {
        let op = operation(&doc, route);
        let declared: Vec<(String, String)> = op["parameters"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .map(|p| {
                        (
                            p["name"].as_str().unwrap().to_string(),
                            p["in"].as_str().unwrap().to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        for name in route.path_params() {
            assert!(
                declared.contains(&(name.to_string(), "path".into())),
                "{}: path parameter {name} undeclared: {declared:?}",
                route.path
            );
        }
        let queries: Vec<&str> = declared
            .iter()
            .filter(|(_, i)| i == "query")
            .map(|(n, _)| n.as_str())
            .collect();
        match &route.query {
            None => assert!(queries.is_empty(), "{}: {queries:?}", route.path),
            Some(_) => {
                assert_eq!(
                    queries,
                    ["since", "until", "offset", "length", "max_ranges"],
                    "{}",
                    route.path
                );
                let since = op["parameters"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|p| p["name"] == "since")
                    .unwrap();
                assert_eq!(since["required"], true);
            }
        }
    }
}

#[test]
fn request_bodies_say_whether_they_are_required() {
    let doc = document();
    for route in ROUTES {
        let body = &operation(&doc, route)["requestBody"];
        match route.body {
            Body::None => assert!(body.is_null(), "{}", route.path),
            Body::Optional(p) | Body::Required(p) => {
                let required = matches!(route.body, Body::Required(_));
                assert_eq!(body["required"], required, "{}", route.path);
                let schema = &body["content"]["application/json"]["schema"]["$ref"];
                assert_eq!(
                    schema.as_str(),
                    Some(format!("#/components/schemas/{}", p.name()).as_str())
                );
            }
        }
    }
}

#[test]
fn error_answers_use_the_error_schema() {
    let doc = document();
    for route in ROUTES {
        let responses = operation(&doc, route)["responses"].as_object().unwrap();
        for status in ["401", "500"] {
            assert!(
                responses.contains_key(status),
                "{}: no {status}",
                route.path
            );
        }
        if route.path_params().next().is_some() {
            assert!(responses.contains_key("404"), "{}", route.path);
        }
        if route.path.contains("{disk}") {
            for status in ["409", "503"] {
                assert!(
                    responses.contains_key(status),
                    "{}: no {status}",
                    route.path
                );
            }
        }
        if route.query.is_some() || route.body.payload().is_some() {
            assert!(responses.contains_key("400"), "{}", route.path);
        }
        for (status, r) in responses {
            if status != "200" {
                assert_eq!(
                    r["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/ErrorBody",
                    "{} {status}",
                    route.path
                );
            }
        }
    }
    let error = &doc["components"]["schemas"]["ErrorBody"];
    let required: Vec<&str> = error["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(required, ["error", "message"]);
    assert!(error["properties"]["tracking"].is_object(), "{error}");
}

#[test]
fn the_bearer_scheme_is_offered_beside_no_security() {
    let doc = document();
    let scheme = &doc["components"]["securitySchemes"][api::BEARER];
    assert_eq!(scheme["type"], "http", "{scheme}");
    assert_eq!(scheme["scheme"], "bearer", "{scheme}");
    assert_eq!(
        doc["security"],
        serde_json::json!([{}, {api::BEARER: []}]),
        "the unix socket needs no token, TCP needs the bearer"
    );
}

/// Every `$ref` in the document points at a schema it defines.
#[test]
fn every_reference_resolves() {
    fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r);
                }
                m.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let doc = document();
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(all.len() > 30, "{all:?}");
    for r in all {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("{r}"));
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "{r} does not resolve"
        );
    }
}

/// The shapes the daemon's clients rely on show in the schemas too.
#[test]
fn schemas_mirror_the_wire_shapes() {
    let doc = document();
    let s = &doc["components"]["schemas"];
    assert_eq!(
        s["JobState"]["enum"],
        serde_json::json!(["running", "succeeded", "failed"])
    );
    assert_eq!(
        s["CheckpointKind"]["enum"],
        serde_json::json!(["standard", "recovery"])
    );
    let kinds = s["ErrorKind"]["enum"].as_array().unwrap();
    for k in [
        "not_found",
        "invalid",
        "io",
        "unknown_id",
        "tracking_file_missing",
    ] {
        assert!(kinds.contains(&Value::from(k)), "{k} not in {kinds:?}");
    }
    let tracking = s["TrackingErrorKind"]["enum"].as_array().unwrap();
    assert_eq!(tracking.len(), api::TrackingErrorKind::KNOWN.len());
    let machine_required = s["Machine"]["required"].as_array().unwrap();
    assert!(machine_required.contains(&Value::from("next_id")));
    assert!(s["Job"]["properties"]["result"].is_object());
}
