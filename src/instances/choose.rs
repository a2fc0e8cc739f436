//! Choosing one running instance by a selector: a port, a pid, or part of the .blend file's name.

use super::dir::discover;
use super::record::Instance;

/// [`choose`] found no single instance.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ChooseError {
    #[error(
        "no blendwire instance is running; start one with `blendwire serve [FILE.blend]` \
         (`--port 0` picks a free port for a second one)"
    )]
    NoneRunning,
    #[error("{}", ambiguous(selector.as_deref(), candidates))]
    Ambiguous {
        selector: Option<String>,
        candidates: Vec<Instance>,
    },
    #[error(
        "no running blendwire instance matches {selector:?} (a port, a pid or part of the .blend file name); running:\n{}",
        listing(running)
    )]
    NoMatch { selector: String, running: Vec<Instance> },
}

fn ambiguous(selector: Option<&str>, candidates: &[Instance]) -> String {
    let head = match selector {
        None => format!("{} blendwire instances are running", candidates.len()),
        Some(s) => format!("{} running blendwire instances match {s:?}", candidates.len()),
    };
    format!(
        "{head}; choose one by port, pid or part of the .blend file name:\n{}",
        listing(candidates)
    )
}

fn listing(instances: &[Instance]) -> String {
    let lines: Vec<String> = instances.iter().map(|i| format!("  {i}")).collect();
    lines.join("\n")
}

/// The one running instance `selector` names (None: the only one running), from [`discover`].
pub fn choose(selector: Option<&str>) -> Result<Instance, ChooseError> {
    choose_from(discover(), selector)
}

/// The one of `instances` that `selector` names: a number is a port or a pid (else part of a file
/// name), anything else part of the .blend file's name (case-insensitive). None: the only one.
pub fn choose_from(instances: Vec<Instance>, selector: Option<&str>) -> Result<Instance, ChooseError> {
    if instances.is_empty() {
        return Err(ChooseError::NoneRunning);
    }
    let selector = selector.map(str::trim).filter(|s| !s.is_empty());
    let Some(wanted) = selector else {
        return one(instances, None);
    };
    let by_number: Vec<Instance> = match wanted.parse::<u32>() {
        Ok(n) => instances
            .iter()
            .filter(|i| u32::from(i.service.port) == n || i.pid == n)
            .cloned()
            .collect(),
        Err(_) => vec![],
    };
    let matches = if by_number.is_empty() {
        let needle = wanted.to_lowercase();
        instances
            .iter()
            .filter(|i| i.blend_name().is_some_and(|f| f.to_lowercase().contains(&needle)))
            .cloned()
            .collect()
    } else {
        by_number
    };
    if matches.is_empty() {
        return Err(ChooseError::NoMatch {
            selector: wanted.to_string(),
            running: instances,
        });
    }
    one(matches, Some(wanted))
}

fn one(mut candidates: Vec<Instance>, selector: Option<&str>) -> Result<Instance, ChooseError> {
    if candidates.len() == 1 {
        return Ok(candidates.remove(0));
    }
    Err(ChooseError::Ambiguous {
        selector: selector.map(str::to_string),
        candidates,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instances::record::tests::sample;

    #[test]
    fn choosing() {
        let all = vec![
            sample(100, 6688, Some("/p/shot010.blend")),
            sample(101, 6689, Some("/p/Shot020.blend")),
            sample(6688, 7000, None),
        ];
        assert!(matches!(choose_from(vec![], None), Err(ChooseError::NoneRunning)));
        assert!(ChooseError::NoneRunning.to_string().contains("blendwire serve"));
        let one_only = vec![all[0].clone()];
        assert_eq!(choose_from(one_only, None).unwrap().pid, 100);
        let err = choose_from(all.clone(), None).unwrap_err();
        assert!(matches!(&err, ChooseError::Ambiguous { candidates, .. } if candidates.len() == 3));
        let text = err.to_string();
        assert!(text.contains("3 blendwire instances are running"), "{text}");
        assert!(
            text.contains("port 6689, pid 101, Shot020.blend (background, Blender 4.2.0)"),
            "{text}"
        );
        assert!(text.contains("unsaved file"), "{text}");
        assert_eq!(choose_from(all.clone(), Some("6689")).unwrap().pid, 101);
        assert_eq!(choose_from(all.clone(), Some("101")).unwrap().service.port, 6689);
        assert_eq!(choose_from(all.clone(), Some(" shot02 ")).unwrap().pid, 101);
        assert_eq!(
            choose_from(all.clone(), Some("010")).unwrap().pid,
            100,
            "digits also match names"
        );
        // 6688 is one's port and another's pid.
        let err = choose_from(all.clone(), Some("6688")).unwrap_err();
        assert!(
            err.to_string().contains("2 running blendwire instances match \"6688\""),
            "{err}"
        );
        let err = choose_from(all.clone(), Some("shot")).unwrap_err();
        assert!(matches!(err, ChooseError::Ambiguous { ref candidates, .. } if candidates.len() == 2));
        let err = choose_from(all, Some("nope")).unwrap_err();
        assert!(matches!(err, ChooseError::NoMatch { .. }));
        assert!(err.to_string().contains("port 7000, pid 6688"), "{err}");
    }
}
