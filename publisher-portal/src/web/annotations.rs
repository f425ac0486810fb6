//! The annotations inbox: readers' annotations on the author's documents, accepted or rejected.

use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Form;

use crate::error::PortalError;
use crate::views::{self, Nav};

use super::*;

pub(super) async fn annotations(
    State(st): State<AppState>,
    Author(s): Author,
    q: Result<Query<DoneQuery>, QueryRejection>,
) -> Result<Response, PortalError> {
    let owned = st.db.owned_ids(s.author_id).await?;
    let list = match st.primaries.annotations("pending", None).await {
        Ok(all) => Some(
            all.into_iter()
                .filter(|a| owned.contains(&a.doc_id))
                .collect::<Vec<_>>(),
        ),
        Err(crate::primaries::NodeError::Unavailable(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let ctx = st
        .page(
            Some(&s),
            q.as_ref().ok().map(|Query(q)| q.done.as_str()),
            Nav::Annotations,
        )
        .await;
    Ok(html(
        StatusCode::OK,
        views::annotations_page(&ctx, list.as_deref()),
    ))
}

pub(super) async fn decide(
    State(st): State<AppState>,
    Author(s): Author,
    Path((aid, decision)): Path<(String, String)>,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Result<Response, PortalError> {
    let Form(f) = form.map_err(|_| PortalError::csrf())?;
    check_csrf(&s, &f.csrf)?;
    if decision != "accept" && decision != "reject" {
        return Err(PortalError::NotFound);
    }
    // The annotation must be on one of the author's documents.
    owned(&st, &s, &f.doc_id).await?;
    let on_doc = st.primaries.annotations("any", Some(&f.doc_id)).await?;
    if !on_doc.iter().any(|a| a.id == aid) {
        return Err(PortalError::NotFound);
    }
    st.primaries.decide_annotation(&aid, &decision).await?;
    st.primaries.forget_pending().await;
    tracing::info!(author = %s.author_name, annotation = %aid, decision, "annotation vetted");
    Ok(see_other(&format!(
        "/annotations?done={}",
        if decision == "accept" {
            "accepted"
        } else {
            "rejected"
        }
    )))
}
