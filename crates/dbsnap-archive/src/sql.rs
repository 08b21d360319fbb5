//! Just enough SQL lexing to read the statements pg_dump writes into an
//! archive's table of contents: find the roles a statement names and point
//! database-level statements at another database name.
//!
//! Pure string work. It never guesses across string literals or quoted
//! identifiers: text inside `'...'`, `E'...'`, `$tag$...$tag$` and
//! `"..."` is one token, so a comment that mentions `DATABASE app` is never
//! rewritten or mistaken for a role.

/// One lexical token, borrowing its text from the statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token<'a> {
    /// A bare word (keyword or unquoted identifier), as written.
    Word(&'a str),
    /// A double-quoted identifier, as written (quotes included).
    Quoted(&'a str),
    /// A string literal (any form), as written.
    Literal(&'a str),
    /// One punctuation character or operator run.
    Symbol(&'a str),
    /// Whitespace or a comment.
    Space(&'a str),
}

impl<'a> Token<'a> {
    /// The text as written.
    pub fn text(&self) -> &'a str {
        match self {
            Token::Word(s) | Token::Quoted(s) | Token::Literal(s) | Token::Symbol(s) => s,
            Token::Space(s) => s,
        }
    }

    /// Whether this is the keyword `kw` (case-insensitive).
    pub fn is_keyword(&self, kw: &str) -> bool {
        matches!(self, Token::Word(w) if w.eq_ignore_ascii_case(kw))
    }

    /// The identifier this token names: a quoted identifier unquoted, a bare
    /// word folded to lower case as PostgreSQL does; None for anything else.
    pub fn identifier(&self) -> Option<String> {
        match self {
            Token::Word(w) => Some(w.to_lowercase()),
            Token::Quoted(q) => Some(q[1..q.len() - 1].replace("\"\"", "\"")),
            _ => None,
        }
    }
}

/// Splits `sql` into tokens; concatenating their texts gives `sql` back.
pub fn tokens(sql: &str) -> Vec<Token<'_>> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let start = i;
        let c = b[i];
        let tok = if c.is_ascii_whitespace() {
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            Token::Space(&sql[start..i])
        } else if c == b'-' && b.get(i + 1) == Some(&b'-') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            Token::Space(&sql[start..i])
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            i = find(b, i + 2, b"*/").map_or(b.len(), |e| e + 2);
            Token::Space(&sql[start..i])
        } else if c == b'\'' {
            i = quoted_end(b, i + 1, b'\'', false);
            Token::Literal(&sql[start..i])
        } else if (c == b'E' || c == b'e') && b.get(i + 1) == Some(&b'\'') {
            i = quoted_end(b, i + 2, b'\'', true);
            Token::Literal(&sql[start..i])
        } else if c == b'"' {
            i = quoted_end(b, i + 1, b'"', false);
            Token::Quoted(&sql[start..i])
        } else if c == b'$' {
            match dollar_tag(b, i) {
                Some(tag_end) => {
                    let tag = &b[i..tag_end];
                    i = find(b, tag_end, tag).map_or(b.len(), |e| e + tag.len());
                    Token::Literal(&sql[start..i])
                }
                None => {
                    i += 1;
                    Token::Symbol(&sql[start..i])
                }
            }
        } else if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 {
            while i < b.len()
                && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'$' || b[i] >= 0x80)
            {
                i += 1;
            }
            Token::Word(&sql[start..i])
        } else if c.is_ascii_digit() {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                i += 1;
            }
            Token::Word(&sql[start..i])
        } else {
            i += 1;
            Token::Symbol(&sql[start..i])
        };
        out.push(tok);
    }
    out
}

fn find(b: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    if from > b.len() {
        return None;
    }
    b[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// End (exclusive) of a literal or quoted identifier whose body starts at
/// `i`; a doubled quote is an escaped one; `backslash` for `E'...'`.
fn quoted_end(b: &[u8], mut i: usize, quote: u8, backslash: bool) -> usize {
    while i < b.len() {
        if backslash && b[i] == b'\\' {
            i += 2;
            continue;
        }
        if b[i] == quote {
            if b.get(i + 1) == Some(&quote) {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    b.len()
}

/// `$tag$` starting at `i`: the end of the opening tag, if it is one.
fn dollar_tag(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_' || b[j] >= 0x80) {
        j += 1;
    }
    (j < b.len() && b[j] == b'$' && !b[i + 1..j].first().is_some_and(u8::is_ascii_digit))
        .then_some(j + 1)
}

/// Quotes an identifier the way that is always safe.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Rewrites every `DATABASE <name>` in `sql` (outside literals) whose
/// identifier is `from` so that it names `to` instead. Everything else is
/// left byte for byte as it was.
pub fn rename_database(sql: &str, from: &str, to: &str) -> String {
    let toks = tokens(sql);
    let mut out = String::with_capacity(sql.len() + to.len());
    let mut after_database = false;
    for t in &toks {
        match t {
            Token::Space(s) => out.push_str(s),
            _ if after_database && t.identifier().as_deref() == Some(from) => {
                out.push_str(&quote_ident(to));
                after_database = false;
            }
            _ => {
                after_database = t.is_keyword("DATABASE");
                out.push_str(t.text());
            }
        }
    }
    out
}

/// The roles a statement grants to or revokes from, creates a policy for,
/// sets defaults for, or runs as. Pseudo-roles (`PUBLIC`, `CURRENT_USER`,
/// ...) are left out. Handles what pg_dump writes: `GRANT ... TO`,
/// `REVOKE ... FROM`, `GRANTED BY`, `CREATE POLICY ... TO`, `ALTER DEFAULT
/// PRIVILEGES FOR ROLE`, `ALTER ROLE ... IN DATABASE`, `SET SESSION
/// AUTHORIZATION`, `CREATE USER MAPPING FOR`.
pub fn referenced_roles(sql: &str) -> Vec<String> {
    let words: Vec<Token<'_>> = tokens(sql)
        .into_iter()
        .filter(|t| !matches!(t, Token::Space(_)))
        .collect();
    let mut roles = Vec::new();
    for stmt in words.split(|t| t.text() == ";") {
        statement_roles(stmt, &mut roles);
    }
    roles.sort();
    roles.dedup();
    roles
}

const PSEUDO_ROLES: &[&str] = &[
    "public",
    "current_user",
    "session_user",
    "current_role",
    "none",
    "default",
];

fn statement_roles(t: &[Token<'_>], roles: &mut Vec<String>) {
    let kw = |i: usize, k: &str| t.get(i).is_some_and(|x| x.is_keyword(k));
    let mut push = |tok: &Token<'_>| {
        if let Some(name) = tok.identifier() {
            let pseudo = matches!(tok, Token::Word(_)) && PSEUDO_ROLES.contains(&name.as_str());
            if !pseudo {
                roles.push(name);
            }
        }
    };
    if t.is_empty() {
        return;
    }
    if kw(0, "SET") && kw(1, "SESSION") && kw(2, "AUTHORIZATION") {
        if let Some(r) = t.get(3) {
            push(r);
        }
        return;
    }
    if kw(0, "ALTER") && kw(1, "ROLE") && kw(3, "IN") && kw(4, "DATABASE") {
        push(&t[2]);
        return;
    }
    if kw(0, "CREATE") && kw(1, "USER") && kw(2, "MAPPING") && kw(3, "FOR") {
        if let Some(r) = t.get(4) {
            push(r);
        }
        return;
    }
    let mut i = 0;
    if kw(0, "ALTER") && kw(1, "DEFAULT") && kw(2, "PRIVILEGES") {
        i = 3;
        while i < t.len() && !(kw(i, "GRANT") || kw(i, "REVOKE")) {
            if (kw(i, "ROLE") || kw(i, "USER")) && kw(i.wrapping_sub(1), "FOR") {
                i = role_list(t, i + 1, &mut push);
                continue;
            }
            i += 1;
        }
    }
    let policy = kw(0, "CREATE") && kw(1, "POLICY");
    let (list_kw, rest) = if kw(i, "GRANT") {
        ("TO", i + 1)
    } else if kw(i, "REVOKE") {
        ("FROM", i + 1)
    } else if policy {
        ("TO", 2)
    } else {
        return;
    };
    let mut depth = 0i32;
    let mut j = rest;
    while j < t.len() {
        match t[j].text() {
            "(" => depth += 1,
            ")" => depth -= 1,
            _ if depth == 0 && t[j].is_keyword(list_kw) => {
                j = role_list(t, j + 1, &mut push);
                continue;
            }
            _ if depth == 0 && kw(j, "GRANTED") && kw(j + 1, "BY") => {
                if let Some(r) = t.get(j + 2) {
                    push(r);
                }
                j += 3;
                continue;
            }
            _ if policy && depth == 0 && (kw(j, "USING") || kw(j, "WITH")) => return,
            _ => {}
        }
        j += 1;
    }
}

/// Reads `role [, role ...]` from `i` (an optional `GROUP` before each);
/// returns the index after the list.
fn role_list(t: &[Token<'_>], mut i: usize, push: &mut impl FnMut(&Token<'_>)) -> usize {
    loop {
        if t.get(i).is_some_and(|x| x.is_keyword("GROUP")) {
            i += 1;
        }
        match t.get(i) {
            Some(tok) if tok.identifier().is_some() => push(tok),
            _ => return i,
        }
        i += 1;
        if t.get(i).map(Token::text) == Some(",") {
            i += 1;
        } else {
            return i;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        let sql =
            "COMMENT ON DATABASE \"a\"\"b\" IS E'it\\'s; DATABASE x' -- c\n/* k */ $f$ body $f$;";
        let joined: String = tokens(sql).iter().map(Token::text).collect();
        assert_eq!(joined, sql);
    }

    #[test]
    fn rename_touches_only_the_database_name() {
        let sql = "COMMENT ON DATABASE \"app db\" IS 'the DATABASE \"app db\" of it';\n";
        assert_eq!(
            rename_database(sql, "app db", "new"),
            "COMMENT ON DATABASE \"new\" IS 'the DATABASE \"app db\" of it';\n"
        );
        let sql = "ALTER DATABASE app SET search_path TO 'app', 'public';\n\
                   ALTER ROLE reader IN DATABASE app SET work_mem TO '16MB';\n\
                   GRANT CONNECT ON DATABASE app TO app;";
        assert_eq!(
            rename_database(sql, "app", "x\"y"),
            "ALTER DATABASE \"x\"\"y\" SET search_path TO 'app', 'public';\n\
             ALTER ROLE reader IN DATABASE \"x\"\"y\" SET work_mem TO '16MB';\n\
             GRANT CONNECT ON DATABASE \"x\"\"y\" TO app;"
        );
        // An unquoted name folds to lower case; a different name is left alone.
        assert_eq!(
            rename_database("ALTER DATABASE App OWNER TO b;", "app", "z"),
            "ALTER DATABASE \"z\" OWNER TO b;"
        );
        assert_eq!(
            rename_database("ALTER DATABASE other OWNER TO b;", "app", "z"),
            "ALTER DATABASE other OWNER TO b;"
        );
    }

    #[test]
    fn roles_of_pg_dump_statements() {
        let cases: &[(&str, &[&str])] = &[
            ("GRANT SELECT ON TABLE public.t TO reader;", &["reader"]),
            (
                "GRANT SELECT(a,b),UPDATE(a) ON TABLE public.t TO reader, \"Writer X\" WITH GRANT OPTION;",
                &["Writer X", "reader"],
            ),
            ("REVOKE ALL ON SCHEMA public FROM PUBLIC;\nGRANT ALL ON SCHEMA public TO app;", &["app"]),
            (
                "SET SESSION AUTHORIZATION grantor;\nGRANT SELECT ON TABLE t TO reader;\nRESET SESSION AUTHORIZATION;",
                &["grantor", "reader"],
            ),
            (
                "CREATE POLICY p ON public.t AS RESTRICTIVE FOR SELECT TO reader, writer USING ((owner = CURRENT_USER));",
                &["reader", "writer"],
            ),
            ("CREATE POLICY p ON public.t USING (true);", &[]),
            (
                "ALTER DEFAULT PRIVILEGES FOR ROLE app IN SCHEMA public GRANT SELECT ON TABLES TO reader;",
                &["app", "reader"],
            ),
            ("ALTER ROLE reader IN DATABASE app SET work_mem TO '16MB';", &["reader"]),
            ("GRANT EXECUTE ON FUNCTION public.f(a integer, b text) TO x;", &["x"]),
            ("GRANT SELECT ON LARGE OBJECT 5002 TO reader GRANTED BY boss;", &["boss", "reader"]),
            ("CREATE USER MAPPING FOR app SERVER s OPTIONS (user 'x');", &["app"]),
            ("GRANT ALL ON DATABASE app TO CURRENT_USER;", &[]),
            ("COMMENT ON TABLE t IS 'GRANT x TO y';", &[]),
        ];
        for (sql, want) in cases {
            assert_eq!(referenced_roles(sql), want.to_vec(), "{sql}");
        }
    }
}
