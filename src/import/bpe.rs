//! GPT-2's byte-level BPE tokenizer: `vocab.json` (token string -> id) and `merges.txt`
//! (one merge per line, ranked by position).
//!
//! Encoding follows GPT-2's `encoder.py`: the text is split into pieces by the
//! pre-tokenizer pattern `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
//! (matched by hand below: `\p{L}` and `\p{N}` are Unicode's general categories, `\s` is
//! White_Space), each piece's UTF-8 bytes are mapped to printable characters by the
//! byte-to-unicode table, and the lowest-ranked adjacent pair is merged until no ranked
//! pair remains. Special tokens of the form `<|...|>` in the vocabulary (GPT-2 has
//! `<|endoftext|>`) are matched in the text before that. Decoding maps each token's
//! characters back to bytes; the bytes need not be UTF-8.

use std::collections::HashMap;

/// A loaded tokenizer.
#[derive(Clone, Debug)]
pub struct Bpe {
    encoder: HashMap<String, u32>,
    decoder: HashMap<u32, String>,
    ranks: HashMap<(String, String), usize>,
    /// `<|...|>` tokens, longest first.
    special: Vec<(String, u32)>,
    byte_to_char: [char; 256],
    char_to_byte: HashMap<char, u8>,
}

/// GPT-2's `bytes_to_unicode`: printable bytes map to themselves, the other 68 to U+0100
/// onwards in byte order (space is `Ġ` U+0120, newline `Ċ` U+010A).
pub fn byte_to_unicode() -> [char; 256] {
    let printable = |b: u32| (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || b >= 0xae;
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    for (b, slot) in table.iter_mut().enumerate() {
        let b = b as u32;
        let code = if printable(b) {
            b
        } else {
            next += 1;
            next - 1
        };
        *slot = char::from_u32(code).unwrap_or('\u{fffd}');
    }
    table
}

impl Bpe {
    /// A tokenizer from the text of `vocab.json` and `merges.txt`; the error says what is
    /// wrong and where.
    pub fn from_texts(vocab_json: &str, merges: &str) -> Result<Bpe, String> {
        let value: serde_json::Value = serde_json::from_str(vocab_json)
            .map_err(|e| format!("vocab.json is not valid JSON ({e})"))?;
        let object = value
            .as_object()
            .ok_or("vocab.json must be an object of token -> id")?;
        let mut encoder = HashMap::with_capacity(object.len());
        let mut decoder = HashMap::with_capacity(object.len());
        for (token, id) in object {
            let id = id
                .as_u64()
                .and_then(|i| u32::try_from(i).ok())
                .ok_or_else(|| format!("vocab.json: the id of `{token}` is not a whole number"))?;
            if let Some(other) = decoder.insert(id, token.clone()) {
                return Err(format!(
                    "vocab.json: id {id} names both `{other}` and `{token}`"
                ));
            }
            encoder.insert(token.clone(), id);
        }
        let mut ranks = HashMap::new();
        for (i, line) in merges.lines().enumerate() {
            if line.starts_with("#version") || line.trim().is_empty() {
                continue;
            }
            let parts: Vec<&str> = line.split(' ').collect();
            let [a, b] = parts[..] else {
                return Err(format!(
                    "merges.txt line {}: expected two symbols separated by one space, found `{line}`",
                    i + 1
                ));
            };
            let rank = ranks.len();
            ranks.entry((a.to_string(), b.to_string())).or_insert(rank);
        }
        let mut special: Vec<(String, u32)> = encoder
            .iter()
            .filter(|(t, _)| t.len() > 4 && t.starts_with("<|") && t.ends_with("|>"))
            .map(|(t, id)| (t.clone(), *id))
            .collect();
        special.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
        let byte_to_char = byte_to_unicode();
        let char_to_byte = byte_to_char
            .iter()
            .enumerate()
            .map(|(b, c)| (*c, b as u8))
            .collect();
        Ok(Bpe {
            encoder,
            decoder,
            ranks,
            special,
            byte_to_char,
            char_to_byte,
        })
    }

    /// The largest id of the vocabulary (none when it is empty).
    pub fn max_id(&self) -> Option<u32> {
        self.decoder.keys().max().copied()
    }

    /// The id of a token string, such as `<|endoftext|>`.
    pub fn id_of(&self, token: &str) -> Option<u32> {
        self.encoder.get(token).copied()
    }

    /// The ids of `text`; an error names a piece the vocabulary lacks.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, String> {
        let mut out = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            let next = self
                .special
                .iter()
                .filter_map(|(t, id)| rest.find(t.as_str()).map(|at| (at, t, *id)))
                .min_by_key(|(at, _, _)| *at);
            let Some((at, token, id)) = next else {
                self.encode_ordinary(rest, &mut out)?;
                break;
            };
            self.encode_ordinary(&rest[..at], &mut out)?;
            out.push(id);
            rest = &rest[at + token.len()..];
        }
        Ok(out)
    }

    fn encode_ordinary(&self, text: &str, out: &mut Vec<u32>) -> Result<(), String> {
        for piece in pre_tokenize(text) {
            let symbols: Vec<String> = piece
                .bytes()
                .map(|b| self.byte_to_char[b as usize].to_string())
                .collect();
            for token in self.merge(symbols) {
                let id = self.encoder.get(&token).ok_or_else(|| {
                    format!("the vocabulary has no token `{token}` (in the text `{piece}`)")
                })?;
                out.push(*id);
            }
        }
        Ok(())
    }

    /// Merge the lowest-ranked adjacent pair, every occurrence left to right, until no
    /// pair of `word` is ranked.
    fn merge(&self, mut word: Vec<String>) -> Vec<String> {
        while word.len() > 1 {
            let best = word
                .windows(2)
                .filter_map(|w| self.ranks.get(&(w[0].clone(), w[1].clone())))
                .min()
                .copied();
            let Some(best) = best else { break };
            let mut merged = Vec::with_capacity(word.len());
            let mut i = 0;
            while i < word.len() {
                let pair_here = i + 1 < word.len()
                    && self.ranks.get(&(word[i].clone(), word[i + 1].clone())) == Some(&best);
                if pair_here {
                    merged.push(format!("{}{}", word[i], word[i + 1]));
                    i += 2;
                } else {
                    merged.push(std::mem::take(&mut word[i]));
                    i += 1;
                }
            }
            word = merged;
        }
        word
    }

    /// The bytes of `ids`; an error names an id outside the vocabulary.
    pub fn decode(&self, ids: &[u32]) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        for id in ids {
            let token = self
                .decoder
                .get(id)
                .ok_or_else(|| format!("id {id} is not in the vocabulary"))?;
            for c in token.chars() {
                match self.char_to_byte.get(&c) {
                    Some(b) => out.push(*b),
                    // Not a byte symbol (a hand-written vocabulary): its UTF-8 bytes.
                    None => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
                }
            }
        }
        Ok(out)
    }
}

fn is_letter(c: char) -> bool {
    pest::unicode::LETTER(c)
}

fn is_number(c: char) -> bool {
    pest::unicode::NUMBER(c)
}

/// The end (byte offset into `s`) of the longest prefix of `s` whose characters satisfy `f`.
fn run_end(s: &str, f: impl Fn(char) -> bool) -> usize {
    s.char_indices()
        .find(|(_, c)| !f(*c))
        .map_or(s.len(), |(i, _)| i)
}

/// GPT-2's pre-tokenizer: the pieces of `text`, in order, covering it exactly.
pub fn pre_tokenize(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let len = piece_len(rest);
        out.push(&rest[..len]);
        rest = &rest[len..];
    }
    out
}

/// The length in bytes of the piece `s` starts with (at least one character).
fn piece_len(s: &str) -> usize {
    for c in ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d"] {
        if s.starts_with(c) {
            return c.len();
        }
    }
    let other = |c: char| !c.is_whitespace() && !is_letter(c) && !is_number(c);
    let skip = usize::from(s.starts_with(' '));
    let body = &s[skip..];
    if let Some(first) = body.chars().next() {
        for class in [is_letter as fn(char) -> bool, is_number, other] {
            if class(first) {
                return skip + run_end(body, class);
            }
        }
    }
    // Whitespace: `\s+(?!\S)` backs off one character before a non-space, unless that
    // leaves nothing, when `\s+` takes the single character.
    let end = run_end(s, char::is_whitespace);
    if end == s.len() {
        return end;
    }
    let last = s[..end].chars().next_back().map_or(1, char::len_utf8);
    if end > last {
        end - last
    } else {
        end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-made vocabulary: the byte symbols of `helo wrd!` and a few merges.
    fn tiny() -> Bpe {
        let vocab = r#"{"h": 0, "e": 1, "l": 2, "o": 3, "\u0120": 4, "w": 5, "r": 6, "d": 7,
            "!": 8, "he": 9, "ll": 10, "llo": 11, "hello": 12, "\u0120w": 13, "or": 14,
            "\u0120wor": 15, "\u0120world": 16, "ld": 17, "<|endoftext|>": 18, "\u010a": 19}"#;
        let merges = "#version: 0.2\nh e\nl l\nll o\nhe llo\n\u{120} w\no r\n\u{120}w or\nl d\n\u{120}wor ld\n";
        Bpe::from_texts(vocab, merges).unwrap()
    }

    #[test]
    fn the_byte_table_is_gpt2s() {
        let t = byte_to_unicode();
        assert_eq!(t[b' ' as usize], '\u{120}');
        assert_eq!(t[b'\n' as usize], '\u{10a}');
        assert_eq!(t[0], '\u{100}');
        assert_eq!(t[b'!' as usize], '!');
        assert_eq!(t[0xad], '\u{143}');
        assert_eq!(t[0xff], '\u{ff}');
        let distinct: std::collections::HashSet<char> = t.iter().copied().collect();
        assert_eq!(distinct.len(), 256);
    }

    #[test]
    fn pre_tokenizer_matches_gpt2s_pattern() {
        assert_eq!(
            pre_tokenize("Hello world's  2024!! ok\n\nend   "),
            ["Hello", " world", "'s", " ", " 2024", "!!", " ok", "\n", "\n", "end", "   "]
        );
        assert_eq!(pre_tokenize("a  b"), ["a", " ", " b"]);
        assert_eq!(
            pre_tokenize("I'm héllo ¾x"),
            ["I", "'m", " héllo", " ¾", "x"]
        );
        assert_eq!(pre_tokenize(" ?!x"), [" ?!", "x"]);
        assert_eq!(pre_tokenize(""), Vec::<&str>::new());
        // As Python's `regex` module splits them with GPT-2's pattern: combining marks are
        // not letters, U+3000 and U+00A0 are whitespace, U+2163 (Roman four) a number.
        let cases: &[(&str, &[&str])] = &[
            (
                "नमस्ते दुनिया",
                &["नमस", "्", "त", "े", " द", "ु", "न", "ि", "य", "ा"],
            ),
            ("x\u{3000}\u{3000}y", &["x", "\u{3000}", "\u{3000}", "y"]),
            ("tab\t\tx 'S", &["tab", "\t", "\t", "x", " '", "S"]),
            ("\u{2163} roman\u{301}", &["\u{2163}", " roman", "\u{301}"]),
            ("a\u{a0}b", &["a", "\u{a0}", "b"]),
            ("  \n  x", &["  \n ", " x"]),
        ];
        for (text, want) in cases {
            assert_eq!(pre_tokenize(text), *want, "{text:?}");
        }
    }

    #[test]
    fn encodes_by_merge_rank_and_round_trips() {
        let bpe = tiny();
        assert_eq!(bpe.encode("hello world").unwrap(), [12, 16]);
        assert_eq!(bpe.encode("hello").unwrap(), [12]);
        // `he ll` is no merge: the word stays two tokens.
        assert_eq!(bpe.encode("hell").unwrap(), [9, 10]);
        assert_eq!(bpe.encode(" w!").unwrap(), [13, 8]);
        assert_eq!(
            bpe.encode("hello<|endoftext|>\nworld").unwrap(),
            [12, 18, 19, 5, 14, 17]
        );
        for text in [
            "hello world",
            "hell",
            " w!",
            "hello<|endoftext|>\nworld",
            "\n\n",
        ] {
            let ids = bpe.encode(text).unwrap();
            assert_eq!(bpe.decode(&ids).unwrap(), text.as_bytes(), "{text}");
        }
        assert_eq!(bpe.max_id(), Some(19));
        assert_eq!(bpe.id_of("<|endoftext|>"), Some(18));
    }

    #[test]
    fn unknown_tokens_and_bad_files_are_errors() {
        let bpe = tiny();
        let e = bpe.encode("hex").unwrap_err();
        assert!(e.contains("no token `x`"), "{e}");
        assert!(bpe.decode(&[99]).unwrap_err().contains("id 99"));
        let e = Bpe::from_texts("[1]", "").unwrap_err();
        assert!(e.contains("object"), "{e}");
        let e = Bpe::from_texts(r#"{"a": -1}"#, "").unwrap_err();
        assert!(e.contains("`a`"), "{e}");
        let e = Bpe::from_texts(r#"{"a": 0, "b": 0}"#, "").unwrap_err();
        assert!(e.contains("id 0"), "{e}");
        let e = Bpe::from_texts(r#"{"a": 0}"#, "#version: 0.2\na b c\n").unwrap_err();
        assert!(e.contains("line 2"), "{e}");
    }
}
