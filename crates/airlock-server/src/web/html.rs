//! HTML building with escaping by construction: dynamic values only enter a
//! page through [`Html::text`] (escaped); markup only from `&'static str`
//! literals. There is no way to push an unescaped runtime string.

use std::fmt::{Display, Write};

/// A page (or fragment) being written.
#[derive(Default)]
pub struct Html(String);

impl Html {
    /// Markup from a literal in our source.
    pub fn raw(&mut self, s: &'static str) -> &mut Self {
        self.0.push_str(s);
        self
    }

    /// A value, escaped for text and for quoted attribute values.
    pub fn text<T: Display + ?Sized>(&mut self, v: &T) -> &mut Self {
        struct Esc<'a>(&'a mut String);
        impl Write for Esc<'_> {
            fn write_str(&mut self, s: &str) -> std::fmt::Result {
                for c in s.chars() {
                    match c {
                        '&' => self.0.push_str("&amp;"),
                        '<' => self.0.push_str("&lt;"),
                        '>' => self.0.push_str("&gt;"),
                        '"' => self.0.push_str("&quot;"),
                        '\'' => self.0.push_str("&#39;"),
                        c => self.0.push(c),
                    }
                }
                Ok(())
            }
        }
        let _ = write!(Esc(&mut self.0), "{v}");
        self
    }

    /// Appends an already built fragment.
    pub fn append(&mut self, other: Html) -> &mut Self {
        self.0.push_str(&other.0);
        self
    }

    /// The finished markup.
    pub fn into_string(self) -> String {
        self.0
    }
}

/// Writes literal markup and escaped values in order:
/// `html!(h, "<td>" (value) "</td>")` — literals raw, parenthesised expressions escaped.
#[macro_export]
#[doc(hidden)]
macro_rules! html {
    ($h:expr $(,)?) => { () };
    ($h:expr, $lit:literal $($rest:tt)*) => {{ $h.raw($lit); $crate::html!($h, $($rest)*) }};
    ($h:expr, ($e:expr) $($rest:tt)*) => {{ $h.text(&$e); $crate::html!($h, $($rest)*) }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped_and_literals_are_not() {
        let mut h = Html::default();
        let evil = "<script>alert('x')</script>\"&";
        crate::html!(h, "<p title=\"" (evil) "\">" (evil) "</p>");
        assert_eq!(
            h.into_string(),
            "<p title=\"&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&quot;&amp;\">&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&quot;&amp;</p>"
        );
    }
}
