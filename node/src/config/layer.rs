//! How the layers of settings (flags and environment, the file, the built-in defaults) combine:
//! field by field, the upper layer's value wins where it has one.
//!
//! [`settings!`](crate::settings) declares a struct of settings once and derives from that one
//! declaration both the merge ([`Layer::over`]) and the lowest layer (`defaults()`), so a new
//! field can be neither forgotten in the merge nor given a default somewhere else.

/// One layer of settings, laid over a lower one.
pub trait Layer {
    /// `self` where it says something, else `lower`.
    fn over(self, lower: Self) -> Self;
}

/// An unset value leaves the lower layer's.
impl<T> Layer for Option<T> {
    fn over(self, lower: Self) -> Self {
        self.or(lower)
    }
}

/// A switch (`--insecure`, `open_enrollment = true`) is on when any layer turns it on: a flag
/// cannot say "off" to clap, only be absent.
impl Layer for bool {
    fn over(self, lower: Self) -> Self {
        self || lower
    }
}

/// A list given in a layer replaces the lower layer's list; an empty one leaves it.
impl<T> Layer for Vec<T> {
    fn over(self, lower: Self) -> Self {
        if self.is_empty() {
            lower
        } else {
            self
        }
    }
}

/// Declares a struct of settings: every field with its attributes (doc comment = help text,
/// `#[arg]` = flag and environment variable, `#[serde]` = file key) and, after `=`, its value in
/// the built-in defaults layer. Generates the struct, `defaults()` and its [`Layer`] merge.
#[macro_export]
#[doc(hidden)]
macro_rules! settings {
    (
        $(#[$attr:meta])*
        pub struct $name:ident {
            $(
                $(#[$field_attr:meta])*
                pub $field:ident : $ty:ty = $default:expr
            ),* $(,)?
        }
    ) => {
        $(#[$attr])*
        pub struct $name {
            $( $(#[$field_attr])* pub $field: $ty, )*
        }

        impl $name {
            /// The lowest layer: each setting's built-in default, `None` where the default
            /// depends on other settings (the tier, the topology) and is decided when they are
            /// validated.
            pub fn defaults() -> Self {
                Self { $( $field: $default, )* }
            }
        }

        impl $crate::config::layer::Layer for $name {
            fn over(self, lower: Self) -> Self {
                Self {
                    $( $field: $crate::config::layer::Layer::over(self.$field, lower.$field), )*
                }
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::Layer;

    #[test]
    fn the_upper_layer_wins_where_it_says_something() {
        assert_eq!(Some(1).over(Some(2)), Some(1));
        assert_eq!(None.over(Some(2)), Some(2));
        assert_eq!(None::<u8>.over(None), None);
        assert!(true.over(false) && false.over(true) && !false.over(false));
        assert_eq!(vec![1].over(vec![2, 3]), [1]);
        assert_eq!(Vec::new().over(vec![2, 3]), [2, 3]);
    }
}
