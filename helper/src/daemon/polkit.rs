//! Asking polkit whether the caller may run a method: the caller's unique bus name is the
//! subject (so polkit looks at that very process's session), interaction is allowed so an
//! agent can ask for a password.

use std::collections::HashMap;

use zbus::zvariant::Value;

/// polkit's answer.
pub enum Verdict {
    Yes,
    No,
    /// polkit could not be asked: treated as no, with the reason.
    Unavailable(String),
}

/// Checks `action` for the bus name `sender`.
pub async fn check(conn: &zbus::Connection, sender: &str, action: &str) -> Verdict {
    let mut subject_details: HashMap<&str, Value<'_>> = HashMap::new();
    subject_details.insert("name", Value::from(sender));
    let subject = ("system-bus-name", subject_details);
    let details: HashMap<&str, &str> = HashMap::new();
    const ALLOW_USER_INTERACTION: u32 = 1;
    let reply = conn
        .call_method(
            Some("org.freedesktop.PolicyKit1"),
            "/org/freedesktop/PolicyKit1/Authority",
            Some("org.freedesktop.PolicyKit1.Authority"),
            "CheckAuthorization",
            &(subject, action, details, ALLOW_USER_INTERACTION, ""),
        )
        .await;
    let msg = match reply {
        Ok(m) => m,
        Err(e) => return Verdict::Unavailable(e.to_string()),
    };
    match msg
        .body()
        .deserialize::<((bool, bool, HashMap<String, String>),)>()
    {
        Ok(((true, _, _),)) => Verdict::Yes,
        Ok(_) => Verdict::No,
        Err(e) => Verdict::Unavailable(e.to_string()),
    }
}
