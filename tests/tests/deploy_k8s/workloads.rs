//! The rules the schemas cannot express for workloads: probes, resources,
//! security contexts, replicas, Services, the HPA, PDBs and the keys Secret.

use super::*;

/// Per container: probes, resources, securityContext, volumes, and the
/// stage's config as it would load it. Returns each stage's loaded view.
pub(crate) fn check_workloads(
    r: &Rendered,
    work: &Path,
    known: &BTreeMap<&'static str, BTreeSet<String>>,
    p: &mut Problems,
) -> BTreeMap<&'static str, (i64, StageView)> {
    let mut stages = BTreeMap::new();
    let all_known: BTreeSet<&String> = known.values().flatten().collect();
    for w in r.workloads() {
        let wctx = format!("{}: {} {}", r.name, kind(w), name(w));
        let pod_spec = w.pointer("/spec/template/spec").unwrap_or(&Value::Null);
        let pod_labels = labels_at(w, "/spec/template/metadata/labels");
        let selector = labels_at(w, "/spec/selector/matchLabels");
        p.check(
            !selector.is_empty() && subset(&selector, &pod_labels),
            || {
                format!(
                    "{wctx}: selector {selector:?} does not match its pod labels {pod_labels:?}"
                )
            },
        );
        let pod_sc = pod_spec
            .get("securityContext")
            .cloned()
            .unwrap_or(Value::Null);
        let volumes: BTreeMap<&str, &Value> = array_at(pod_spec, "/volumes")
            .iter()
            .filter_map(|v| Some((str_at(v, "/name")?, v)))
            .collect();
        let init = array_at(pod_spec, "/initContainers")
            .iter()
            .map(|c| (c, true));
        let main = array_at(pod_spec, "/containers").iter().map(|c| (c, false));
        p.check(!array_at(pod_spec, "/containers").is_empty(), || {
            format!("{wctx}: no containers")
        });
        for (c, is_init) in main.chain(init) {
            let ctx = format!("{wctx} container {}", str_at(c, "/name").unwrap_or("?"));
            let image = str_at(c, "/image").unwrap_or_default();
            p.check(
                image.starts_with(&format!("{IMAGE}:")) || image.starts_with(&format!("{IMAGE}@")),
                || format!("{ctx}: image {image:?} is not {IMAGE}:<tag>"),
            );
            if r.flavour == Flavour::Prod {
                p.check(!image.ends_with(":latest"), || {
                    format!("{ctx}: prod must pin the image, not {image}")
                });
            }

            // Probes, on ports the container declares.
            let ports = array_at(c, "/ports");
            let port_declared = |port: &Value| match port {
                Value::String(n) => ports.iter().any(|pt| str_at(pt, "/name") == Some(n)),
                Value::Number(n) => ports
                    .iter()
                    .any(|pt| pt.pointer("/containerPort").and_then(Value::as_i64) == n.as_i64()),
                _ => false,
            };
            for (probe, path, required) in [
                ("livenessProbe", Some("/healthz"), !is_init),
                ("readinessProbe", Some("/readyz"), !is_init),
                ("startupProbe", None, false),
            ] {
                let Some(pr) = c.get(probe) else {
                    p.check(!required, || format!("{ctx}: no {probe}"));
                    continue;
                };
                let port = ["httpGet", "tcpSocket", "grpc"]
                    .iter()
                    .find_map(|h| pr.pointer(&format!("/{h}/port")));
                match port {
                    Some(port) => p.check(port_declared(port), || {
                        format!("{ctx}: {probe} port {port} is not a declared containerPort")
                    }),
                    None => p.fail(format!("{ctx}: {probe} probes no port")),
                }
                if let Some(want) = path {
                    let got = str_at(pr, "/httpGet/path");
                    p.check(got == Some(want), || {
                        format!("{ctx}: {probe} must GET {want}, not {got:?}")
                    });
                }
            }

            // Requests and limits, limits at least the requests.
            for res in ["cpu", "memory"] {
                let req = c.pointer(&format!("/resources/requests/{res}"));
                let lim = c.pointer(&format!("/resources/limits/{res}"));
                match (req.and_then(quantity), lim.and_then(quantity)) {
                    (Some(req), Some(lim)) => p.check(lim >= req, || {
                        format!("{ctx}: {res} limit is below its request")
                    }),
                    _ => p.fail(format!(
                        "{ctx}: needs resources.requests.{res} and resources.limits.{res}"
                    )),
                }
            }

            // Not root, nothing writable but volumes, no privileges.
            let sc = c.get("securityContext").cloned().unwrap_or(Value::Null);
            let effective = |key: &str| sc.get(key).or_else(|| pod_sc.get(key)).cloned();
            p.check(effective("runAsNonRoot") == Some(Value::Bool(true)), || {
                format!("{ctx}: runAsNonRoot must be true")
            });
            let uid = effective("runAsUser").and_then(|v| v.as_i64());
            p.check(uid.is_some_and(|u| u > 0), || {
                format!("{ctx}: runAsUser must be set and non-zero, is {uid:?}")
            });
            p.check(
                sc.get("readOnlyRootFilesystem") == Some(&Value::Bool(true)),
                || format!("{ctx}: readOnlyRootFilesystem must be true"),
            );
            p.check(
                sc.get("allowPrivilegeEscalation") == Some(&Value::Bool(false)),
                || format!("{ctx}: allowPrivilegeEscalation must be false"),
            );
            p.check(sc.get("privileged") != Some(&Value::Bool(true)), || {
                format!("{ctx}: must not be privileged")
            });
            let drops = array_at(&sc, "/capabilities/drop");
            p.check(drops.iter().any(|d| d.as_str() == Some("ALL")), || {
                format!("{ctx}: capabilities must drop ALL")
            });
            let seccomp = effective("seccompProfile");
            p.check(
                seccomp
                    .as_ref()
                    .and_then(|s| str_at(s, "/type"))
                    .is_some_and(|t| t == "RuntimeDefault"),
                || format!("{ctx}: seccompProfile must be RuntimeDefault"),
            );

            // Volumes: every mount backed, and /tmp writable (the root
            // filesystem is not, and TMPDIR defaults there).
            let mounts = array_at(c, "/volumeMounts");
            for m in mounts {
                let v = str_at(m, "/name").unwrap_or_default();
                p.check(volumes.contains_key(v), || {
                    format!("{ctx}: mounts volume {v}, which the pod does not define")
                });
            }
            let empty_dir_mounts: Vec<&str> = mounts
                .iter()
                .filter(|m| {
                    str_at(m, "/name")
                        .and_then(|v| volumes.get(v))
                        .is_some_and(|v| v.get("emptyDir").is_some())
                })
                .filter_map(|m| str_at(m, "/mountPath"))
                .collect();
            p.check(empty_dir_mounts.contains(&"/tmp"), || {
                format!("{ctx}: needs an emptyDir at /tmp (the root filesystem is read-only)")
            });
            if is_init {
                continue;
            }

            // The stage's config, as the stage would load it.
            let Some(stage) = stage_of(c) else {
                p.fail(format!(
                    "{ctx}: command must be /usr/local/bin/<{}>",
                    STAGES.join("|")
                ));
                continue;
            };
            let pod = pod_name(w);
            let env = container_env(r, c, &pod, &ctx, p);
            for var in array_at(c, "/env")
                .iter()
                .filter_map(|v| str_at(v, "/name"))
            {
                if var == "WEIR_CONFIG" {
                    continue;
                }
                if let Some(top) = env_top_key(var) {
                    p.check(known[stage].contains(&top), || {
                        format!(
                            "{ctx}: {var} sets no key of {stage} (its keys: {:?})",
                            known[stage]
                        )
                    });
                }
            }
            for var in env.keys().filter(|k| k.as_str() != "WEIR_CONFIG") {
                if let Some(top) = env_top_key(var) {
                    p.check(all_known.contains(&top), || {
                        format!("{ctx}: {var} sets no key of any stage")
                    });
                }
            }
            let Some(config_path) = env.get("WEIR_CONFIG") else {
                p.fail(format!("{ctx}: WEIR_CONFIG is not set"));
                continue;
            };
            let Some(toml) = config_file(r, pod_spec, c, config_path, &ctx, p) else {
                continue;
            };
            let file = work.join(format!("{}-{}-{stage}.toml", r.name, name(w)));
            std::fs::write(&file, toml).expect("write config");
            let view = match load_stage(stage, &file, &env, &pod) {
                Ok(view) => view,
                Err(e) => {
                    p.fail(format!("{ctx}: {stage} would not load its config: {e}"));
                    continue;
                }
            };
            let declared = |port_name: &str| {
                ports
                    .iter()
                    .find(|pt| str_at(pt, "/name") == Some(port_name))
                    .and_then(|pt| pt.pointer("/containerPort"))
                    .and_then(Value::as_i64)
            };
            p.check(port_of(&view.listen) == declared("http"), || {
                format!(
                    "{ctx}: {stage} listens on {} but its `http` containerPort is {:?}",
                    view.listen,
                    declared("http")
                )
            });
            if let Some(grpc) = view.grpc_listen.as_deref().filter(|g| !g.is_empty()) {
                p.check(port_of(grpc) == declared("grpc"), || {
                    format!(
                        "{ctx}: gRPC listens on {grpc} but the `grpc` containerPort is {:?}",
                        declared("grpc")
                    )
                });
            }
            if let Some(timeout) = view.shutdown_timeout_ms {
                let grace = pod_spec
                    .get("terminationGracePeriodSeconds")
                    .and_then(Value::as_u64)
                    .unwrap_or(30);
                p.check(timeout < grace * 1000, || {
                    format!("{ctx}: shutdown_timeout_ms {timeout} must be below terminationGracePeriodSeconds {grace}")
                });
            }
            if let Some(id) = &view.instance_id {
                let from_pod = array_at(c, "/env").iter().any(|v| {
                    str_at(v, "/name") == Some("WEIR_INSTANCE_ID")
                        && str_at(v, "/valueFrom/fieldRef/fieldPath") == Some("metadata.name")
                });
                p.check(from_pod && *id == pod, || {
                    format!("{ctx}: WEIR_INSTANCE_ID must come from the pod name (downward API); instance_id is {id:?}")
                });
            }
            if let Some(dir) = &view.spill_dir {
                p.check(
                    empty_dir_mounts
                        .iter()
                        .any(|m| Path::new(dir).starts_with(m) && !m.is_empty()),
                    || format!("{ctx}: dedup_spill_dir {dir} is not on an emptyDir"),
                );
            }
            if let Some(url) = &view.store_url {
                check_archive_store(r, w, c, &volumes, url, &ctx, p);
            }
            match (&view.keys, r.flavour) {
                (Some(Ok(_)), Flavour::Base) => p.fail(format!(
                    "{ctx}: {stage} accepts the base's placeholder keys; they must make it refuse to start"
                )),
                (Some(Err(e)), Flavour::Dev | Flavour::Prod) => {
                    p.fail(format!("{ctx}: {stage} refuses its keys: {e}"))
                }
                _ => {}
            }
            if stage == "processor" {
                p.check(kind(w) == "StatefulSet", || {
                    format!("{wctx}: the processor must be a StatefulSet, for stable instance ids")
                });
            }
            if stages.insert(stage, (replicas(w), view)).is_some() {
                p.fail(format!("{}: more than one workload runs {stage}", r.name));
            }
        }
    }
    for stage in STAGES {
        p.check(stages.contains_key(stage), || {
            format!("{}: no workload runs {stage}", r.name)
        });
    }
    stages
}

/// The archiver's store: the base holds a marked placeholder (REPLACE_ME)
/// that every overlay replaces. A filesystem store is the pod's own volume: a
/// writable emptyDir or PersistentVolumeClaim at its directory (the root
/// filesystem is read-only), in a workload of one replica, since two pods
/// would each keep part of the archive and of its checkpoints.
pub(crate) fn check_archive_store(
    r: &Rendered,
    workload: &Value,
    container: &Value,
    volumes: &BTreeMap<&str, &Value>,
    url: &str,
    ctx: &str,
    p: &mut Problems,
) {
    let placeholder = url.contains("REPLACE_ME");
    p.check(placeholder == (r.flavour == Flavour::Base), || {
        if placeholder {
            format!("{ctx}: store.url {url} still holds the base's placeholder")
        } else {
            format!(
                "{ctx}: store.url {url} must be the marked placeholder (REPLACE_ME) in the base"
            )
        }
    });
    let dir = match reqwest::Url::parse(url) {
        Ok(u) if u.scheme() == "file" => u.path().trim_end_matches('/').to_string(),
        Ok(_) => return,
        Err(e) => {
            p.fail(format!("{ctx}: store.url {url:?} is not a URL: {e}"));
            return;
        }
    };
    let mount = array_at(container, "/volumeMounts")
        .iter()
        .filter(|m| {
            str_at(m, "/mountPath")
                .is_some_and(|at| Path::new(&dir).starts_with(at.trim_end_matches('/')))
        })
        .max_by_key(|m| str_at(m, "/mountPath").map_or(0, str::len));
    let volume = mount
        .and_then(|m| str_at(m, "/name"))
        .and_then(|v| volumes.get(v));
    let writable = mount.is_some_and(|m| m.get("readOnly") != Some(&Value::Bool(true)))
        && volume.is_some_and(|v| {
            v.get("emptyDir").is_some() || v.get("persistentVolumeClaim").is_some()
        });
    p.check(writable, || {
        format!("{ctx}: store.url {url}: {dir} is on no writable emptyDir or PersistentVolumeClaim (the root filesystem is read-only)")
    });
    p.check(replicas(workload) == 1, || {
        format!(
            "{ctx}: store.url {url} is each pod's own directory, so {} replicas would split the archive and its checkpoints; run one",
            replicas(workload)
        )
    });
}

/// Replica counts: bounded by the partitions, and what each overlay promises.
pub(crate) fn check_replicas(
    r: &Rendered,
    stages: &BTreeMap<&'static str, (i64, StageView)>,
    hpa_min: Option<i64>,
    p: &mut Problems,
) {
    for stage in ["processor", "aggregator", "archiver"] {
        if let Some((replicas, view)) = stages.get(stage) {
            p.check(*replicas <= i64::from(view.partitions), || {
                format!(
                    "{}: {replicas} {stage} replicas but {} partitions: the extra instances would sit idle",
                    r.name, view.partitions
                )
            });
        }
    }
    let count = |stage: &str| stages.get(stage).map(|(n, _)| *n);
    match r.flavour {
        Flavour::Dev => {
            for (what, n) in [
                ("ingest (HPA minReplicas)", hpa_min),
                ("processor", count("processor")),
                ("aggregator", count("aggregator")),
                ("archiver", count("archiver")),
            ] {
                p.check(n == Some(1), || {
                    format!("dev: {what} should run 1 replica, not {n:?}")
                });
            }
        }
        Flavour::Prod => {
            for (what, n) in [
                ("ingest (HPA minReplicas)", hpa_min),
                ("processor", count("processor")),
                ("aggregator", count("aggregator")),
                ("archiver", count("archiver")),
            ] {
                p.check(n.is_some_and(|n| n >= 2), || {
                    format!("prod: {what} needs at least 2 replicas, not {n:?}")
                });
            }
        }
        Flavour::Base => {}
    }
}

/// Services reach pods that declare their target ports.
pub(crate) fn check_services(r: &Rendered, p: &mut Problems) {
    for svc in r.of_kind("Service") {
        let ctx = format!("{}: Service {}", r.name, name(svc));
        let selector = labels_at(svc, "/spec/selector");
        let targets: Vec<&Value> = r
            .workloads()
            .filter(|w| {
                !selector.is_empty()
                    && subset(&selector, &labels_at(w, "/spec/template/metadata/labels"))
            })
            .collect();
        p.check(!targets.is_empty(), || {
            format!("{ctx}: selects no workload")
        });
        for port in array_at(svc, "/spec/ports") {
            let target = port
                .get("targetPort")
                .or_else(|| port.get("port"))
                .cloned()
                .unwrap_or(Value::Null);
            for w in &targets {
                let declared = array_at(w, "/spec/template/spec/containers")
                    .iter()
                    .flat_map(|c| array_at(c, "/ports"))
                    .any(|pt| match &target {
                        Value::String(n) => str_at(pt, "/name") == Some(n),
                        Value::Number(n) => {
                            pt.pointer("/containerPort").and_then(Value::as_i64) == n.as_i64()
                        }
                        _ => false,
                    });
                p.check(declared, || {
                    format!(
                        "{ctx}: targetPort {target} is not a port of {} {}",
                        kind(w),
                        name(w)
                    )
                });
            }
        }
    }
    for sts in r.of_kind("StatefulSet") {
        let svc = str_at(sts, "/spec/serviceName").unwrap_or_default();
        let governs = r.find("Service", svc).is_some_and(|s| {
            subset(
                &labels_at(s, "/spec/selector"),
                &labels_at(sts, "/spec/template/metadata/labels"),
            )
        });
        p.check(governs, || {
            format!(
                "{}: StatefulSet {}: serviceName {svc:?} is no Service selecting its pods",
                r.name,
                name(sts)
            )
        });
    }
}

/// The ingest HPA; returns its minReplicas.
pub(crate) fn check_hpa(r: &Rendered, p: &mut Problems) -> Option<i64> {
    let hpas: Vec<&Value> = r.of_kind("HorizontalPodAutoscaler").collect();
    p.check(hpas.len() == 1, || {
        format!(
            "{}: expected one HorizontalPodAutoscaler, found {}",
            r.name,
            hpas.len()
        )
    });
    let hpa = hpas.first()?;
    let ctx = format!("{}: HorizontalPodAutoscaler {}", r.name, name(hpa));
    p.check(str_at(hpa, "/apiVersion") == Some("autoscaling/v2"), || {
        format!("{ctx}: must be autoscaling/v2")
    });
    let target_kind = str_at(hpa, "/spec/scaleTargetRef/kind").unwrap_or_default();
    let target_name = str_at(hpa, "/spec/scaleTargetRef/name").unwrap_or_default();
    let target = r.find(target_kind, target_name);
    let is_ingest = target.is_some_and(|t| {
        kind(t) == "Deployment"
            && array_at(t, "/spec/template/spec/containers")
                .iter()
                .any(|c| stage_of(c) == Some("ingest"))
    });
    p.check(is_ingest, || {
        format!("{ctx}: must target the ingest Deployment, targets {target_kind} {target_name}")
    });
    if let Some(t) = target {
        // A replicas field would reset the HPA's count on every apply.
        p.check(t.pointer("/spec/replicas").is_none(), || {
            format!("{ctx}: its target sets spec.replicas, which fights the HPA")
        });
    }
    let cpu = array_at(hpa, "/spec/metrics").iter().any(|m| {
        str_at(m, "/type") == Some("Resource") && str_at(m, "/resource/name") == Some("cpu")
    });
    p.check(cpu, || format!("{ctx}: must scale on CPU"));
    let min = hpa.pointer("/spec/minReplicas").and_then(Value::as_i64);
    let max = hpa.pointer("/spec/maxReplicas").and_then(Value::as_i64);
    p.check(
        matches!((min, max), (Some(lo), Some(hi)) if lo >= 1 && lo <= hi),
        || format!("{ctx}: needs 1 <= minReplicas <= maxReplicas, has {min:?}..{max:?}"),
    );
    min
}

/// Every workload has exactly one PodDisruptionBudget that lets a drain go on.
pub(crate) fn check_pdbs(r: &Rendered, p: &mut Problems) {
    for w in r.workloads() {
        let labels = labels_at(w, "/spec/template/metadata/labels");
        let pdbs: Vec<&Value> = r
            .of_kind("PodDisruptionBudget")
            .filter(|pdb| {
                let sel = labels_at(pdb, "/spec/selector/matchLabels");
                !sel.is_empty() && subset(&sel, &labels)
            })
            .collect();
        let ctx = format!("{}: {} {}", r.name, kind(w), name(w));
        p.check(pdbs.len() == 1, || {
            format!(
                "{ctx}: expected one PodDisruptionBudget, found {}",
                pdbs.len()
            )
        });
        for pdb in pdbs {
            p.check(str_at(pdb, "/apiVersion") == Some("policy/v1"), || {
                format!("{ctx}: PodDisruptionBudget must be policy/v1")
            });
            if let Some(min) = pdb.pointer("/spec/minAvailable").and_then(Value::as_i64) {
                p.check(min < replicas(w), || {
                    format!(
                        "{ctx}: minAvailable {min} with {} replicas blocks every drain",
                        replicas(w)
                    )
                });
            }
        }
    }
}

/// The keys Secret: a marked placeholder in the base, replaced in overlays.
pub(crate) fn check_keys_secret(r: &Rendered, p: &mut Problems) {
    let secrets: Vec<&Value> = r
        .of_kind("Secret")
        .filter(|s| name(s).starts_with("weir-keys"))
        .collect();
    p.check(secrets.len() == 1, || {
        format!(
            "{}: expected one weir-keys Secret, found {}",
            r.name,
            secrets.len()
        )
    });
    for s in secrets {
        for key in ["WEIR_AUTH__WRITE_KEYS", "WEIR_AUTH__READ_KEYS"] {
            let value = r.data("Secret", name(s), key).unwrap_or_default();
            let placeholder = value.contains("REPLACE_ME");
            p.check(placeholder == (r.flavour == Flavour::Base), || {
                format!(
                    "{}: Secret {} {key} {}",
                    r.name,
                    name(s),
                    if placeholder {
                        "still holds the base's placeholder"
                    } else {
                        "must be the marked placeholder (REPLACE_ME) in the base"
                    }
                )
            });
        }
    }
}

pub(crate) fn label_selector_matches(selector: &Value, labels: &BTreeMap<String, String>) -> bool {
    if !subset(&labels_at(selector, "/matchLabels"), labels) {
        return false;
    }
    array_at(selector, "/matchExpressions").iter().all(|e| {
        let key = str_at(e, "/key").unwrap_or_default();
        let values: Vec<&str> = array_at(e, "/values")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let have = labels.get(key).map(String::as_str);
        match str_at(e, "/operator") {
            Some("In") => have.is_some_and(|v| values.contains(&v)),
            Some("NotIn") => !have.is_some_and(|v| values.contains(&v)),
            Some("Exists") => have.is_some(),
            Some("DoesNotExist") => have.is_none(),
            _ => false,
        }
    })
}
