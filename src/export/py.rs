//! Small helpers for writing Python source: indented lines, literals and attribute access
//! that stays valid for any name the language allows.

/// Python source built line by line.
#[derive(Default)]
pub(crate) struct Code {
    pub text: String,
}

impl Code {
    /// One line at `indent` levels of four spaces.
    pub fn line(&mut self, indent: usize, text: impl AsRef<str>) {
        let text = text.as_ref();
        if !text.is_empty() {
            for _ in 0..indent {
                self.text.push_str("    ");
            }
        }
        self.text.push_str(text);
        self.text.push('\n');
    }
    pub fn blank(&mut self) {
        self.text.push('\n');
    }
    /// Verbatim text (a fixed part of the generated file).
    pub fn raw(&mut self, text: &str) {
        self.text.push_str(text);
    }
}

/// A float as a Python literal that reads back as the same double.
pub(crate) fn float(v: f64) -> String {
    if v.is_nan() {
        "float(\"nan\")".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "float(\"inf\")".into()
        } else {
            "float(\"-inf\")".into()
        }
    } else {
        format!("{v:?}")
    }
}

pub(crate) fn boolean(b: bool) -> &'static str {
    if b {
        "True"
    } else {
        "False"
    }
}

/// A Python string literal.
pub(crate) fn string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

const KEYWORDS: &[&str] = &[
    "False", "None", "True", "and", "as", "assert", "async", "await", "break", "class", "continue",
    "def", "del", "elif", "else", "except", "finally", "for", "from", "global", "if", "import",
    "in", "is", "lambda", "nonlocal", "not", "or", "pass", "raise", "return", "try", "while",
    "with", "yield",
];

/// Attributes every `torch.nn.Module` has: a submodule of that name cannot be registered.
pub(crate) const MODULE_ATTRIBUTES: &[&str] = &[
    "T_destination",
    "add_module",
    "apply",
    "bfloat16",
    "buffers",
    "call_super_init",
    "children",
    "compile",
    "cpu",
    "cuda",
    "double",
    "dump_patches",
    "eval",
    "extra_repr",
    "float",
    "forward",
    "get_buffer",
    "get_extra_state",
    "get_parameter",
    "get_submodule",
    "half",
    "ipu",
    "load_state_dict",
    "modules",
    "mtia",
    "named_buffers",
    "named_children",
    "named_modules",
    "named_parameters",
    "parameters",
    "register_backward_hook",
    "register_buffer",
    "register_forward_hook",
    "register_forward_pre_hook",
    "register_full_backward_hook",
    "register_full_backward_pre_hook",
    "register_load_state_dict_post_hook",
    "register_load_state_dict_pre_hook",
    "register_module",
    "register_parameter",
    "register_state_dict_post_hook",
    "register_state_dict_pre_hook",
    "requires_grad_",
    "set_extra_state",
    "set_submodule",
    "share_memory",
    "state_dict",
    "to",
    "to_empty",
    "train",
    "training",
    "type",
    "xpu",
    "zero_grad",
];

/// Whether `name` can be a submodule of a `torch.nn.Module` at all.
pub(crate) fn registrable(name: &str) -> bool {
    !name.starts_with('_') && !MODULE_ATTRIBUTES.contains(&name)
}

/// Whether `owner.name` is valid Python (an identifier that is not a keyword).
fn plain(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !KEYWORDS.contains(&name)
}

/// `owner.name`, or `getattr(owner, "name")` for a Python keyword.
pub(crate) fn attr(owner: &str, name: &str) -> String {
    if plain(name) {
        format!("{owner}.{name}")
    } else {
        format!("getattr({owner}, {})", string(name))
    }
}

/// The statement that registers `value` as `owner.name`.
pub(crate) fn set_attr(owner: &str, name: &str, value: &str) -> String {
    if plain(name) {
        format!("{owner}.{name} = {value}")
    } else {
        format!("setattr({owner}, {}, {value})", string(name))
    }
}

/// `layer_norm` -> `LayerNorm`.
pub(crate) fn camel(name: &str) -> String {
    let mut out = String::new();
    let mut upper = true;
    for c in name.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_and_names() {
        assert_eq!(float(0.5), "0.5");
        assert_eq!(float(1e-5), "1e-5");
        assert_eq!(float(-2.0), "-2.0");
        assert_eq!(string("a\"b"), "\"a\\\"b\"");
        assert_eq!(attr("self", "attn"), "self.attn");
        assert_eq!(attr("self", "in"), "getattr(self, \"in\")");
        assert_eq!(set_attr("self", "in", "x"), "setattr(self, \"in\", x)");
        assert!(!registrable("train"));
        assert!(!registrable("_modules"));
        assert!(registrable("ffn"));
        assert_eq!(camel("layer_norm"), "LayerNorm");
    }
}
