//! The tools the test renders and validates with: Debian's kubectl 1.20 and
//! PyPI's kubernetes-validate, from the tools cache.

use super::*;

pub(crate) struct Tools {
    pub(crate) kubectl: PathBuf,
    pub(crate) validate: PathBuf,
}

impl Tools {
    pub(crate) fn locate() -> Self {
        let dir = std::env::var_os("WEIR_TOOLS")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").expect("HOME or WEIR_TOOLS"))
                    .join(".cache/weir/tools")
            });
        let tools = Self {
            kubectl: dir.join("k8s/bin/kubectl"),
            validate: dir.join("venv-k8s/bin/kubernetes-validate"),
        };
        for tool in [&tools.kubectl, &tools.validate] {
            assert!(
                tool.exists(),
                "{} is missing: run deploy/local/install.sh",
                tool.display()
            );
        }
        tools
    }

    pub(crate) fn render(&self, dir: &Path) -> Result<String, String> {
        let out = Command::new(&self.kubectl)
            .arg("kustomize")
            .arg(dir)
            .output()
            .expect("run kubectl");
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(String::from_utf8(out.stdout).expect("utf-8 manifests"))
    }

    /// Validates `file` strictly; only the CRD kinds may go unchecked.
    pub(crate) fn validate(&self, name: &str, file: &Path, docs: &[Value], p: &mut Problems) {
        let out = Command::new(&self.validate)
            .args(["--strict", "-k", K8S_VERSION])
            .arg(file)
            .output()
            .expect("run kubernetes-validate");
        let stdout = String::from_utf8_lossy(&out.stdout);
        p.check(out.status.success(), || {
            format!(
                "{name}: kubernetes-validate failed ({}):\n{stdout}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        });
        let mut passed = 0;
        for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
            if line.starts_with("INFO ") && line.contains(" passed for resource ") {
                passed += 1;
                continue;
            }
            let unchecked_kind = line
                .strip_prefix("WARN ")
                .and_then(|rest| rest.split("for kind ").nth(1))
                .and_then(|rest| rest.split_whitespace().next());
            match unchecked_kind {
                Some(kind) if CRD_KINDS.contains(&kind) => {}
                _ => p.fail(format!("{name}: kubernetes-validate: {line}")),
            }
        }
        let expected = docs
            .iter()
            .filter(|d| !CRD_KINDS.contains(&kind(d)))
            .count();
        p.check(passed == expected, || {
            format!("{name}: kubernetes-validate passed {passed} objects, expected {expected}")
        });
    }
}
