//! The local page: `/` lists the profiles of the last hours (kept ones and continuous-mode
//! windows; [`list`]), `/view/<file>` shows one ([`view`]): why it was kept, the timeline of
//! the target's values ([`plot`]), the flame graphs and the top table read back from its pprof
//! ([`flame`]). In: the dump dir (through [`super::files`], on its workers). Out: plain
//! server-rendered HTML; the style sheet and the one script are embedded (no external asset).

mod flame;
mod html;
mod list;
mod plot;
mod view;

use std::{sync::Arc, time::SystemTime};

use axum::{
    extract::{Path as UrlPath, Query, State},
    http::StatusCode,
    response::{Html, IntoResponse, Response},
};

use super::{
    files::{find_listed, list_kept, read_ours, Listing, MAX_SERVED_BYTES},
    WebState, BUSY,
};
use flame::{decode, Flame, FlameError};
use list::{render_list, ListQuery};
use view::{render_view, ViewQuery};

/// `/`: the listing, filtered and paged by the query.
pub async fn list(State(state): State<Arc<WebState>>, Query(query): Query<ListQuery>) -> Response {
    let query = Arc::new(query);
    let listing = match state.dump_dir.clone() {
        Some(dir) => {
            let (window, stats) = (state.page_window, Arc::clone(&state.metrics.files));
            let wanted = Arc::clone(&query);
            let read = state.file_workers.run(&state.metrics.files, move || {
                list_kept(&dir, window, SystemTime::now(), &stats, |row| {
                    wanted.accepts(row)
                })
            });
            match read.await {
                Ok(listing) => listing,
                Err(_) => return (StatusCode::SERVICE_UNAVAILABLE, BUSY).into_response(),
            }
        }
        None => Listing::default(),
    };
    let page = render_list(
        &listing,
        &query,
        state.page_window,
        state.dump_dir.as_deref(),
    );
    (html::page_headers(), Html(page)).into_response()
}

/// Why a profile's page was not made.
enum ViewError {
    NotListed,
    Flame(FlameError),
}

/// `/view/<file>`: one listed profile's page.
pub async fn view(
    State(state): State<Arc<WebState>>,
    UrlPath(name): UrlPath<String>,
    Query(query): Query<ViewQuery>,
) -> Response {
    let Some(dir) = state.dump_dir.clone() else {
        return (StatusCode::NOT_FOUND, "no dump dir\n").into_response();
    };
    let (window, stats) = (state.page_window, Arc::clone(&state.metrics.files));
    let read = state.file_workers.run(&state.metrics.files, move || {
        let row = find_listed(&dir, &name, window, SystemTime::now(), &stats)
            .filter(|row| row.pprof == name)
            .ok_or(ViewError::NotListed)?;
        let bytes =
            read_ours(&dir, &name, MAX_SERVED_BYTES, &stats).map_err(|_| ViewError::NotListed)?;
        let profile = decode(&bytes).map_err(ViewError::Flame)?;
        let flame =
            Flame::build(&profile, query.sample_type.as_deref()).map_err(ViewError::Flame)?;
        Ok(render_view(&row, &flame))
    });
    match read.await {
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, BUSY).into_response(),
        Ok(Ok(page)) => (html::page_headers(), Html(page)).into_response(),
        Ok(Err(ViewError::NotListed)) => (
            StatusCode::NOT_FOUND,
            "not a listed profile: the page's list at / links to each\n",
        )
            .into_response(),
        Ok(Err(ViewError::Flame(err @ FlameError::NoSuchType(..)))) => {
            (StatusCode::BAD_REQUEST, format!("{err}\n")).into_response()
        }
        Ok(Err(ViewError::Flame(err))) => {
            tracing::warn!("/view: {err}");
            (StatusCode::INTERNAL_SERVER_ERROR, format!("{err}\n")).into_response()
        }
    }
}
