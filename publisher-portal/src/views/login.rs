//! The login page.

use maud::{html, Markup};

use super::{layout, PageCtx};

pub fn login(
    ctx: &PageCtx,
    login_csrf: &str,
    name: &str,
    next: &str,
    error: Option<&str>,
) -> Markup {
    layout(
        ctx,
        "Log in",
        html! {
            section.card.narrow {
                h1 { "Log in" }
                @if let Some(e) = error {
                    p.error role="alert" #login-error { (e) }
                }
                form method="post" action="/login" {
                    input type="hidden" name="csrf" value=(login_csrf);
                    input type="hidden" name="next" value=(next);
                    div.field {
                        label for="name" { "User name" }
                        input #name name="name" type="text" value=(name) autocomplete="username"
                            required autofocus maxlength="64" aria-describedby=[error.map(|_| "login-error")];
                    }
                    div.field {
                        label for="password" { "Password" }
                        input #password name="password" type="password" autocomplete="current-password" required;
                    }
                    button.primary type="submit" { "Log in" }
                }
                p.hint { "Accounts are created by the operator with "
                    code { "docfed-portal add-author NAME" } "." }
            }
        },
    )
}
