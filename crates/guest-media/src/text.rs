//! Which characters may go into a guest's files: the check every value written into a seed
//! passes, and that vmctl applies to names and keys it is given.

/// True for text characters never written into a guest's files or shown raw: the controls
/// (C0, DEL, C1), the bidi formatting characters (UAX #9) and what YAML 1.1 does not allow in a
/// stream (its `c-printable`: no C0 but TAB/LF/CR, no DEL, no C1 but NEL, no U+FFFE/U+FFFF).
pub fn is_unsafe_text_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{fffe}'
                | '\u{ffff}'
        )
}
