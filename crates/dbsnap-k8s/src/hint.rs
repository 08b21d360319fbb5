//! What to do about a Kubernetes failure, with the settings that are the
//! way out named by what they are, not by a command line's flags: the
//! application words each [`Setting`] (`--pod-timeout`, a config key).

use std::fmt;

/// A setting of dbsnap's Kubernetes work that a hint names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Setting {
    /// The kubeconfig file.
    Kubeconfig,
    /// The kubeconfig context.
    Context,
    /// The namespace of the application.
    Namespace,
    /// The application's container in its pod.
    Container,
    /// How long a jump pod may take to start.
    PodTimeout,
    /// The jump pod's image.
    Image,
    /// The registry to take the jump pod's image from.
    Registry,
    /// Accepting a registry without verified TLS.
    ForceInsecure,
    /// Reading the database password from the application's Secret.
    ReadSecret,
    /// The port-forward route.
    PortForward,
    /// Exporting the namespace's objects with a snapshot.
    ExportObjects,
    /// How long to wait for volume snapshots.
    Wait,
    /// The workload to scale down.
    Scale,
    /// The commands that stop and start the application.
    StopCommands,
    /// The databases, given by connection string instead of discovered.
    Databases,
}

impl Setting {
    /// Every setting, for renderers' tests.
    pub const ALL: [Setting; 15] = [
        Setting::Kubeconfig,
        Setting::Context,
        Setting::Namespace,
        Setting::Container,
        Setting::PodTimeout,
        Setting::Image,
        Setting::Registry,
        Setting::ForceInsecure,
        Setting::ReadSecret,
        Setting::PortForward,
        Setting::ExportObjects,
        Setting::Wait,
        Setting::Scale,
        Setting::StopCommands,
        Setting::Databases,
    ];

    /// The setting in plain words, for text that has no command line.
    pub fn words(self) -> &'static str {
        match self {
            Setting::Kubeconfig => "the kubeconfig setting",
            Setting::Context => "the context setting",
            Setting::Namespace => "the namespace setting",
            Setting::Container => "the container setting",
            Setting::PodTimeout => "the pod timeout",
            Setting::Image => "the image setting",
            Setting::Registry => "the registry setting",
            Setting::ForceInsecure => "the insecure-registry setting",
            Setting::ReadSecret => "the read-secret setting",
            Setting::PortForward => "the port-forward route",
            Setting::ExportObjects => "the object export",
            Setting::Wait => "the snapshot wait",
            Setting::Scale => "the scale setting",
            Setting::StopCommands => "the stop and start commands",
            Setting::Databases => "the databases setting",
        }
    }
}

/// One piece of a hint: words, or a setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Text(String),
    Setting(Setting),
}

impl From<&str> for Part {
    fn from(s: &str) -> Part {
        Part::Text(s.to_string())
    }
}

impl From<String> for Part {
    fn from(s: String) -> Part {
        Part::Text(s)
    }
}

impl From<Setting> for Part {
    fn from(s: Setting) -> Part {
        Part::Setting(s)
    }
}

/// What to do, as words and settings; built with [`hint!`](crate::hint!).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hint(pub Vec<Part>);

impl Hint {
    /// The hint with each setting worded by `name`.
    pub fn render(&self, name: impl Fn(Setting) -> String) -> String {
        self.0
            .iter()
            .map(|p| match p {
                Part::Text(t) => t.clone(),
                Part::Setting(s) => name(*s),
            })
            .collect()
    }

    /// The settings this hint names.
    pub fn settings(&self) -> impl Iterator<Item = Setting> + '_ {
        self.0.iter().filter_map(|p| match p {
            Part::Setting(s) => Some(*s),
            Part::Text(_) => None,
        })
    }

    /// This hint, then `more`.
    pub fn then(mut self, more: Hint) -> Hint {
        self.0.extend(more.0);
        self
    }
}

/// In plain words ([`Setting::words`]).
impl fmt::Display for Hint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(|s| s.words().to_string()))
    }
}

impl From<&str> for Hint {
    fn from(s: &str) -> Hint {
        Hint(vec![s.into()])
    }
}

impl From<String> for Hint {
    fn from(s: String) -> Hint {
        Hint(vec![s.into()])
    }
}

/// A [`Hint`] from words and [`Setting`]s:
/// `hint!["raise ", Setting::PodTimeout, ", or check the events"]`.
#[macro_export]
macro_rules! hint {
    ($($part:expr),+ $(,)?) => {
        $crate::hint::Hint(vec![$($crate::hint::Part::from($part)),+])
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hint_words_its_settings_as_the_application_says() {
        let h = hint!["raise ", Setting::PodTimeout, format!(" (now {} s)", 120)];
        assert_eq!(
            h.render(|_| "--pod-timeout".into()),
            "raise --pod-timeout (now 120 s)"
        );
        assert_eq!(h.to_string(), "raise the pod timeout (now 120 s)");
        assert_eq!(h.settings().collect::<Vec<_>>(), [Setting::PodTimeout]);
    }
}
