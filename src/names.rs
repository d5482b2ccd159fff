//! Closed sets of names that travel as snake_case strings (JSON, SQL, URLs):
//! stages, statuses, outcomes, kinds. One macro gives each enum its
//! `as_str`, `Display`, `FromStr` (with an error that lists the valid names)
//! and serde form, so that the text of a name is written once.

/// Defines a closed set of snake_case names as an enum.
macro_rules! named_enum {
    ($(#[$meta:meta])* $name:ident, $what:literal { $($(#[$variant_meta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, ::serde::Serialize, ::serde::Deserialize, ::utoipa::ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$variant_meta])* $variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::names::UnknownName;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::ALL.iter().copied().find(|v| v.as_str() == s).ok_or_else(|| $crate::names::UnknownName {
                    what: $what,
                    value: s.to_owned(),
                    expected: concat!($($text, ", "),+).trim_end_matches(", "),
                })
            }
        }
    };
}
pub(crate) use named_enum;

/// A name outside its set, with the names that would do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} `{value}`; expected one of: {expected}")]
pub struct UnknownName {
    pub what: &'static str,
    pub value: String,
    pub expected: &'static str,
}

#[cfg(test)]
mod tests {
    named_enum! {
        Colour, "colour" {
            Red => "red",
            /// With a doc comment of its own.
            DarkBlue => "dark_blue",
        }
    }

    #[test]
    fn names_round_trip_and_refuse_with_the_valid_ones() {
        for colour in Colour::ALL {
            assert_eq!(colour.as_str().parse::<Colour>(), Ok(*colour));
            assert_eq!(
                serde_json::to_value(colour).unwrap(),
                serde_json::json!(colour.as_str())
            );
        }
        let err = "green".parse::<Colour>().unwrap_err().to_string();
        assert_eq!(
            err,
            "unknown colour `green`; expected one of: red, dark_blue"
        );
    }
}
