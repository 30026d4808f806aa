//! The `-f` output format of `sluice consume`, after kcat's: `%t` topic, `%p` partition,
//! `%o` offset, `%k` key, `%s` value, `%T` timestamp (ms, -1 if none), `%h` headers as
//! `k=v,k2=v2` (`k` alone for a null value), `%%` a percent sign; `\n`, `\t`, `\r`, `\\`
//! escapes. A missing key or value prints as nothing.

use rdkafka::message::{Headers, Message};

#[derive(Debug, PartialEq, Eq)]
enum Token {
    Literal(Vec<u8>),
    Topic,
    Partition,
    Offset,
    Key,
    Value,
    Timestamp,
    Headers,
}

/// A parsed format string.
#[derive(Debug)]
pub struct Format {
    tokens: Vec<Token>,
}

impl Format {
    pub fn parse(spec: &str) -> Result<Format, String> {
        let mut tokens = Vec::new();
        let mut lit = Vec::new();
        let mut chars = spec.chars();
        let flush = |lit: &mut Vec<u8>, tokens: &mut Vec<Token>| {
            if !lit.is_empty() {
                tokens.push(Token::Literal(std::mem::take(lit)));
            }
        };
        while let Some(c) = chars.next() {
            match c {
                '%' => {
                    let t = match chars.next() {
                        Some('t') => Token::Topic,
                        Some('p') => Token::Partition,
                        Some('o') => Token::Offset,
                        Some('k') => Token::Key,
                        Some('s') => Token::Value,
                        Some('T') => Token::Timestamp,
                        Some('h') => Token::Headers,
                        Some('%') => {
                            lit.push(b'%');
                            continue;
                        }
                        Some(other) => return Err(format!("unknown format directive %{other}")),
                        None => return Err("format ends with a lone %".into()),
                    };
                    flush(&mut lit, &mut tokens);
                    tokens.push(t);
                }
                '\\' => match chars.next() {
                    Some('n') => lit.push(b'\n'),
                    Some('t') => lit.push(b'\t'),
                    Some('r') => lit.push(b'\r'),
                    Some('0') => lit.push(0),
                    Some('\\') => lit.push(b'\\'),
                    Some(other) => {
                        lit.push(b'\\');
                        let mut b = [0u8; 4];
                        lit.extend_from_slice(other.encode_utf8(&mut b).as_bytes());
                    }
                    None => lit.push(b'\\'),
                },
                other => {
                    let mut b = [0u8; 4];
                    lit.extend_from_slice(other.encode_utf8(&mut b).as_bytes());
                }
            }
        }
        flush(&mut lit, &mut tokens);
        Ok(Format { tokens })
    }

    /// Appends `m` rendered with this format to `out`.
    pub fn render<M: Message>(&self, m: &M, out: &mut Vec<u8>) {
        use std::io::Write;
        for t in &self.tokens {
            // Writes into a Vec cannot fail.
            let _ = match t {
                Token::Literal(l) => out.write_all(l),
                Token::Topic => out.write_all(m.topic().as_bytes()),
                Token::Partition => write!(out, "{}", m.partition()),
                Token::Offset => write!(out, "{}", m.offset()),
                Token::Key => out.write_all(m.key().unwrap_or_default()),
                Token::Value => out.write_all(m.payload().unwrap_or_default()),
                Token::Timestamp => write!(out, "{}", m.timestamp().to_millis().unwrap_or(-1)),
                Token::Headers => {
                    if let Some(hs) = m.headers() {
                        for (i, h) in hs.iter().enumerate() {
                            if i > 0 {
                                out.push(b',');
                            }
                            out.extend_from_slice(h.key.as_bytes());
                            if let Some(v) = h.value {
                                out.push(b'=');
                                out.extend_from_slice(v);
                            }
                        }
                    }
                    Ok(())
                }
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_directives_and_escapes() {
        let f = Format::parse(r"%p %o %k %s\n").unwrap();
        assert_eq!(
            f.tokens,
            vec![
                Token::Partition,
                Token::Literal(b" ".to_vec()),
                Token::Offset,
                Token::Literal(b" ".to_vec()),
                Token::Key,
                Token::Literal(b" ".to_vec()),
                Token::Value,
                Token::Literal(b"\n".to_vec()),
            ]
        );
        let f = Format::parse(r"100%%\t%T").unwrap();
        assert_eq!(
            f.tokens,
            vec![Token::Literal(b"100%\t".to_vec()), Token::Timestamp]
        );
        assert!(Format::parse("%x").is_err());
        assert!(Format::parse("abc%").is_err());
    }
}
