//! Text with nginx-style variables, as header values and access-log formats write it: `$name` (letters, digits,
//! `_`), `${name}` where letters follow, `$$` for a `$`. Each user says which names it knows.

/// A piece of a template: text, or a variable as its user resolved it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Part<V> {
    Text(String),
    Var(V),
}

/// Split `text` into its pieces; `resolve` turns a variable's name into the user's value or says why it is not
/// one. Errors quote the whole text.
pub(crate) fn parse<V>(
    text: &str,
    resolve: impl Fn(&str) -> Result<V, String>,
) -> Result<Vec<Part<V>>, String> {
    let mut parts = Vec::new();
    let mut literal = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        literal.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, next) = if let Some(inner) = after.strip_prefix('{') {
            let end = inner
                .find('}')
                .ok_or_else(|| format!("{text:?}: `${{` without its `}}`"))?;
            (&inner[..end], &inner[end + 1..])
        } else if let Some(next) = after.strip_prefix('$') {
            literal.push('$');
            rest = next;
            continue;
        } else {
            let len = after
                .bytes()
                .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
                .count();
            (&after[..len], &after[len..])
        };
        if name.is_empty() {
            return Err(format!(
                "{text:?}: `$` starts a variable ($name or ${{name}}; `$$` for a `$`)"
            ));
        }
        let var = resolve(name).map_err(|e| format!("{text:?}: {e}"))?;
        if !literal.is_empty() {
            parts.push(Part::Text(std::mem::take(&mut literal)));
        }
        parts.push(Part::Var(var));
        rest = next;
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        parts.push(Part::Text(literal));
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_braces_and_dollars() {
        let known = |n: &str| match n {
            "a" | "bc" => Ok(n.to_owned()),
            _ => Err(format!("unknown ${n}")),
        };
        assert_eq!(
            parse("x $a-${bc}y $$ z", known),
            Ok(vec![
                Part::Text("x ".into()),
                Part::Var("a".into()),
                Part::Text("-".into()),
                Part::Var("bc".into()),
                Part::Text("y $ z".into()),
            ])
        );
        assert!(parse("$nope", known).is_err_and(|e| e.contains("unknown $nope")));
        assert!(parse("${a", known).is_err());
        assert!(parse("a$", known).is_err());
        assert!(parse("$-", known).is_err());
    }
}
