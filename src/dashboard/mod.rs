//! The operator's dashboard: server-rendered HTML from the handlebars
//! templates in `templates/dashboard/` (compiled into the binary), served by
//! `assay serve` beside the API. Handlers are thin: check the session (and
//! the CSRF token on every form), ask the store, shape a view, render.
//! Every value goes through handlebars' HTML escaping.

pub mod auth;
mod signin;
mod sso;
mod views;

use std::str::FromStr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use self::auth::{Lockout, Operator};
use self::views::Views;
use crate::access::{Action, Actor, ActorKind, Grant};
use crate::incident::IncidentStatus;
use crate::run::{RunStatus, Stage};
use crate::state::AppState;
use crate::store::{Cursor, IncidentFilter, RunFilter, StoreError};

/// What the dashboard keeps besides the app's state.
#[derive(Clone)]
pub struct Dashboard {
    pub app: AppState,
    views: Arc<Views>,
    lockout: Arc<Lockout>,
    sso: sso::Provider,
    /// Sign-ins begun at the identity provider, per client: each costs a
    /// stored row and a request to the provider.
    sso_starts: Arc<governor::DefaultKeyedRateLimiter<std::net::IpAddr>>,
    /// ...and in all, whatever the addresses.
    sso_starts_all: Arc<governor::DefaultDirectRateLimiter>,
    /// The summary strip per project, counted at most every
    /// [`SUMMARY_TTL`]: counting a day of runs on every page view would
    /// make the page's cost grow with the traffic.
    summaries: Arc<
        std::sync::Mutex<
            std::collections::HashMap<String, (std::time::Instant, crate::store::RunSummary)>,
        >,
    >,
}

const SUMMARY_TTL: std::time::Duration = std::time::Duration::from_secs(10);

/// An error page: the store failed, a page does not exist, or the
/// operator may not do what they asked.
pub struct PageError(StatusCode, std::borrow::Cow<'static, str>);

impl PageError {
    fn new(status: StatusCode, message: impl Into<std::borrow::Cow<'static, str>>) -> PageError {
        PageError(status, message.into())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        (
            self.0,
            Html(format!(
                "<!doctype html><title>{0}</title><main style=\"font-family: sans-serif; padding: 20px\"><h1>{0}</h1><p><a href=\"/\">Back to runs</a></p></main>",
                handlebars::html_escape(&self.1)
            )),
        )
            .into_response()
    }
}

impl From<StoreError> for PageError {
    fn from(e: StoreError) -> PageError {
        match e {
            StoreError::NotFound(_) => PageError::new(StatusCode::NOT_FOUND, "Not found"),
            other => {
                tracing::error!(error = %other, "a dashboard page failed");
                PageError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong; the error is logged",
                )
            }
        }
    }
}

type PageResult = Result<Response, PageError>;

impl axum::extract::FromRef<Dashboard> for AppState {
    fn from_ref(dashboard: &Dashboard) -> AppState {
        dashboard.app.clone()
    }
}

pub fn router(app: AppState) -> Router {
    let dashboard = Dashboard {
        views: Arc::new(Views::new()),
        lockout: Arc::new(Lockout::default()),
        sso: sso::Provider::new(),
        sso_starts: Arc::new(governor::RateLimiter::keyed(signin::SSO_STARTS)),
        sso_starts_all: Arc::new(governor::RateLimiter::direct(signin::SSO_STARTS_ALL)),
        summaries: Arc::default(),
        app,
    };
    Router::new()
        .route("/", get(runs_page))
        .route("/signin", get(signin::signin_page).post(signin::signin))
        .route("/signin/sso", get(signin::sso_begin))
        .route(signin::SSO_CALLBACK, get(signin::sso_callback))
        .route("/signout", post(signin::signout))
        .route("/runs/{project}/{run}", get(run_page))
        .route("/incidents", get(incidents_page))
        .route("/incidents/{id}", get(incident_page))
        .route("/incidents/{id}/acknowledge", post(acknowledge))
        .route("/incidents/{id}/resolve", post(resolve))
        .route("/drills", get(drills_page).post(start_drill))
        .route("/keys", get(keys_page).post(create_key))
        .route("/keys/{id}/revoke", post(revoke_key))
        .route("/audit", get(audit_page))
        // Forms are a few fields.
        .layer(axum::extract::DefaultBodyLimit::max(16 * 1024))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(dashboard)
}

/// What every dashboard answer carries, its error pages and redirects
/// included: never cached (pages hold customers' data), never framed, no
/// script, forms only to Assay, no referrer sent elsewhere, and no content
/// sniffed into another type.
async fn security_headers(mut response: Response) -> Response {
    const POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CACHE_CONTROL, "no-store"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::CONTENT_SECURITY_POLICY, POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
    ] {
        headers.insert(name, header::HeaderValue::from_static(value));
    }
    response
}

impl Dashboard {
    /// Whether operators reach Assay over TLS (cookies are then `Secure`).
    fn secure(&self, headers: &HeaderMap) -> bool {
        self.app.config.alerts.public_url.starts_with("https://")
            || headers
                .get("x-forwarded-proto")
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"))
    }

    fn render(&self, template: &str, operator: Option<&Operator>, mut context: Value) -> Response {
        if let Some(signed_in) = operator {
            context["operator"] = json!(signed_in.0.operator);
            context["csrf"] = json!(signed_in.0.csrf_token);
            let project = context["project"]
                .as_str()
                .or_else(|| context["incident"]["project"].as_str())
                .map(str::to_owned)
                .or_else(|| self.project(None).ok());
            if let Some(project) = project {
                context["can"] = self.abilities(signed_in, &project);
            }
        }
        match self.views.render(template, &context) {
            Ok(html) => Html(html).into_response(),
            Err(e) => {
                tracing::error!(template, error = %e, "rendering a dashboard page failed");
                PageError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong; the error is logged",
                )
                .into_response()
            }
        }
    }

    async fn summary(&self, project: &str) -> Result<crate::store::RunSummary, StoreError> {
        let cached = self
            .summaries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(project)
            .filter(|(at, _)| at.elapsed() < SUMMARY_TTL)
            .map(|(_, summary)| summary.clone());
        if let Some(summary) = cached {
            return Ok(summary);
        }
        let since = crate::now() - chrono::Duration::hours(24);
        let summary = self.app.store.run_summary(project, since).await?;
        self.summaries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                project.to_owned(),
                (std::time::Instant::now(), summary.clone()),
            );
        Ok(summary)
    }

    /// Who `operator` is in the audit log, when their role in `project`
    /// allows `action`; else a 403 page that says what it needs. An
    /// operator with no role there (one the configuration no longer names)
    /// may do nothing.
    fn may(&self, operator: &Operator, project: &str, action: Action) -> Result<Actor, PageError> {
        let session = &operator.0;
        let refused = |why: String| Err(PageError::new(StatusCode::FORBIDDEN, why));
        let config = &self.app.config;
        let role = match &session.sso_groups {
            Some(groups) => config
                .group_roles(groups)
                .and_then(|roles| roles.in_project(project)),
            None => config.role_of(&session.operator, project),
        };
        match role {
            Some(role) if Grant::Operator(role).allows(action) => Ok(Actor {
                kind: ActorKind::Operator,
                name: session.operator.clone(),
                address: operator.1.clone(),
            }),
            Some(role) => refused(Grant::Operator(role).refusal(action)),
            None => refused(format!("you have no role in project `{project}`")),
        }
    }

    /// What `operator` may do in `project`, for a page to show only those
    /// actions.
    fn abilities(&self, operator: &Operator, project: &str) -> Value {
        let may = |action| self.may(operator, project, action).is_ok();
        json!({
            "acknowledge": may(Action::AcknowledgeIncident),
            "resolve": may(Action::ResolveIncident),
            "start_drill": may(Action::StartDrill),
            "manage_keys": may(Action::ManageKeys),
            "read_audit": may(Action::ReadAudit),
        })
    }

    /// The project a page shows: the one asked for, else the first.
    fn project(&self, asked: Option<&str>) -> Result<String, PageError> {
        let projects = &self.app.config.projects;
        match asked.filter(|p| !p.is_empty()) {
            Some(name) if projects.contains_key(name) => Ok(name.to_owned()),
            Some(_) => Err(PageError::new(StatusCode::NOT_FOUND, "No such project")),
            None => projects.keys().next().cloned().ok_or(PageError::new(
                StatusCode::NOT_FOUND,
                "No project is configured",
            )),
        }
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: Option<String>,
    resolution: Option<String>,
}

/// Refuses a form whose CSRF token is not the session's.
fn check_csrf(operator: &Operator, form: &CsrfForm) -> Result<(), PageError> {
    match &form.csrf {
        Some(token) if auth::equal(token, &operator.0.csrf_token) => Ok(()),
        _ => Err(PageError::new(
            StatusCode::FORBIDDEN,
            "This form has expired or did not come from Assay; reload the page and try again",
        )),
    }
}

#[derive(Deserialize, Default)]
struct RunsQuery {
    project: Option<String>,
    status: Option<String>,
    stage: Option<String>,
    customer_id: Option<String>,
    cursor: Option<String>,
}

/// Parses an optional filter; an empty or unknown value means "any".
fn filter<T: FromStr>(value: Option<&str>) -> Option<T> {
    value.filter(|v| !v.is_empty()).and_then(|v| v.parse().ok())
}

/// The status a list shows: open unless asked otherwise, since open is what
/// the operator is waiting on. An empty value means "any".
fn status_or_open(asked: Option<&str>) -> String {
    asked.unwrap_or("open").to_owned()
}

/// A page cursor; a mangled one shows the first page rather than an error.
fn cursor(text: Option<&str>) -> Option<Cursor> {
    text.and_then(|c| Cursor::decode(c).ok())
}

const PAGE_SIZE: u32 = 50;
const REFRESH_SECS: u32 = 15;

async fn runs_page(
    State(d): State<Dashboard>,
    operator: Operator,
    Query(q): Query<RunsQuery>,
) -> PageResult {
    let project = d.project(q.project.as_deref())?;
    d.may(&operator, &project, Action::ReadRuns)?;
    let status_text = status_or_open(q.status.as_deref());
    if let Some(customer) = q.customer_id.as_deref()
        && !customer.trim().is_empty()
        && !crate::api::is_clean_field(customer)
    {
        return Err(PageError::new(
            StatusCode::BAD_REQUEST,
            "A customer id is up to 255 printable characters",
        ));
    }
    let run_filter = RunFilter {
        drill: false,
        status: filter::<RunStatus>(Some(&status_text)),
        stage: filter::<Stage>(q.stage.as_deref()),
        customer_id: None,
        customer_id_prefix: q
            .customer_id
            .as_deref()
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_owned),
        limit: PAGE_SIZE,
        cursor: cursor(q.cursor.as_deref()),
    };
    let page = d.app.store.list_runs(&project, &run_filter).await?;
    let failed: Vec<uuid::Uuid> = page
        .data
        .iter()
        .filter(|run| run.status == RunStatus::Failed)
        .map(|run| run.id)
        .collect();
    let incidents = d.app.store.first_incidents(&project, &failed).await?;
    let summary = d.summary(&project).await?;
    let next = page.next_cursor.as_ref().map(|cursor| {
        views::query_url(
            "/",
            &[
                ("project", Some(project.as_str())),
                ("status", Some(status_text.as_str())),
                ("stage", q.stage.as_deref()),
                ("customer_id", q.customer_id.as_deref()),
                ("cursor", Some(cursor.as_str())),
            ],
        )
    });
    let mut context = views::runs_page(
        &d.app.config,
        &project,
        &status_text,
        &q.stage,
        &q.customer_id,
        &page.data,
        &incidents,
        &summary,
        next,
        REFRESH_SECS,
    );
    // While the project's input is broken, that comes first: the runs
    // below are not all there is.
    let mut project_incidents = d.app.store.open_project_incidents().await?;
    project_incidents.retain(|i| i.project == project && !i.drill);
    context["project_incidents"] = views::project_incidents_banner(&project_incidents);
    Ok(d.render("runs", Some(&operator), context))
}

async fn run_page(
    State(d): State<Dashboard>,
    operator: Operator,
    Path((project, run)): Path<(String, String)>,
) -> PageResult {
    let project = d.project(Some(&project))?;
    d.may(&operator, &project, Action::ReadRuns)?;
    let detail = d
        .app
        .store
        .run_detail(
            &project,
            &crate::api::run_ref(&run)
                .map_err(|_| PageError::new(StatusCode::NOT_FOUND, "Not found"))?,
        )
        .await?;
    let event = d
        .app
        .store
        .stripe_event(&project, &detail.run.event_id)
        .await?;
    Ok(d.render(
        "run",
        Some(&operator),
        views::run_page(&detail, event.as_deref()),
    ))
}

#[derive(Deserialize, Default)]
struct IncidentsQuery {
    project: Option<String>,
    status: Option<String>,
    cursor: Option<String>,
}

async fn incidents_page(
    State(d): State<Dashboard>,
    operator: Operator,
    Query(q): Query<IncidentsQuery>,
) -> PageResult {
    let project = d.project(q.project.as_deref())?;
    d.may(&operator, &project, Action::ReadIncidents)?;
    let status_text = status_or_open(q.status.as_deref());
    let incident_filter = IncidentFilter {
        scope: None,
        drill: false,
        status: filter::<IncidentStatus>(Some(&status_text)),
        limit: PAGE_SIZE,
        cursor: cursor(q.cursor.as_deref()),
    };
    let page = d
        .app
        .store
        .list_incidents(&project, &incident_filter)
        .await?;
    let next = page.next_cursor.as_ref().map(|cursor| {
        views::query_url(
            "/incidents",
            &[
                ("project", Some(project.as_str())),
                ("status", Some(status_text.as_str())),
                ("cursor", Some(cursor.as_str())),
            ],
        )
    });
    Ok(d.render(
        "incidents",
        Some(&operator),
        views::incidents_page(&project, &status_text, &page.data, next),
    ))
}

/// Finds an incident in whichever project holds it (alert links name only
/// the incident), among the projects where `operator` may read incidents:
/// the others' are not found, as the API's are for another project's key.
async fn find_incident(
    d: &Dashboard,
    operator: &Operator,
    id: &str,
) -> Result<crate::store::IncidentDetail, PageError> {
    let id = uuid::Uuid::parse_str(id)
        .map_err(|_| PageError::new(StatusCode::NOT_FOUND, "Not found"))?;
    let readable = d
        .app
        .config
        .projects
        .keys()
        .filter(|project| d.may(operator, project, Action::ReadIncidents).is_ok());
    for project in readable {
        match d.app.store.incident(project, id).await {
            Ok(detail) => return Ok(detail),
            Err(StoreError::NotFound(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(PageError::new(StatusCode::NOT_FOUND, "Not found"))
}

async fn incident_page(
    State(d): State<Dashboard>,
    operator: Operator,
    Path(id): Path<String>,
) -> PageResult {
    let detail = find_incident(&d, &operator, &id).await?;
    Ok(d.render("incident", Some(&operator), views::incident_page(&detail)))
}

async fn acknowledge(
    State(d): State<Dashboard>,
    operator: Operator,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> PageResult {
    check_csrf(&operator, &form)?;
    let detail = find_incident(&d, &operator, &id).await?;
    let incident = &detail.incident;
    let actor = d.may(&operator, &incident.project, Action::AcknowledgeIncident)?;
    match d
        .app
        .store
        .acknowledge_incident(&incident.project, incident.id, &actor, crate::now())
        .await
    {
        // Acknowledging a resolved incident: nothing to do, show it as it is.
        Ok(_) | Err(StoreError::Incident(_)) => {}
        Err(e) => return Err(e.into()),
    }
    tracing::info!(incident_id = %incident.id, operator = %operator.0.operator, "incident acknowledged on the dashboard");
    Ok(Redirect::to(&format!("/incidents/{}", incident.id)).into_response())
}

async fn resolve(
    State(d): State<Dashboard>,
    operator: Operator,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> PageResult {
    check_csrf(&operator, &form)?;
    let detail = find_incident(&d, &operator, &id).await?;
    let incident = &detail.incident;
    let actor = d.may(&operator, &incident.project, Action::ResolveIncident)?;
    let resolution = form
        .resolution
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(|r| {
            r.chars()
                .filter(|c| !c.is_control())
                .take(2000)
                .collect::<String>()
        })
        .unwrap_or_else(|| format!("resolved by {} on the dashboard", operator.0.operator));
    d.app
        .store
        .resolve_incident(
            &incident.project,
            incident.id,
            resolution,
            &actor,
            crate::now(),
        )
        .await?;
    Ok(Redirect::to(&format!("/incidents/{}", incident.id)).into_response())
}

#[derive(Deserialize, Default)]
struct DrillsQuery {
    project: Option<String>,
    cursor: Option<String>,
}

/// Past and running drills of a project, newest first, each with its
/// steps; drills are kept apart from the real customers' runs and
/// incidents on the other pages.
async fn drills_page(
    State(d): State<Dashboard>,
    operator: Operator,
    Query(q): Query<DrillsQuery>,
) -> PageResult {
    let project = d.project(q.project.as_deref())?;
    d.may(&operator, &project, Action::ReadDrills)?;
    let page = d
        .app
        .store
        .list_drills(&project, PAGE_SIZE, cursor(q.cursor.as_deref()))
        .await?;
    let next = page.next_cursor.as_ref().map(|cursor| {
        views::query_url(
            "/drills",
            &[
                ("project", Some(project.as_str())),
                ("cursor", Some(cursor.as_str())),
            ],
        )
    });
    let running = page
        .data
        .iter()
        .any(|drill| drill.status == crate::drill::DrillStatus::Running);
    Ok(d.render(
        "drills",
        Some(&operator),
        views::drills_page(&d.app.config, &project, &page.data, next, running),
    ))
}

#[derive(Deserialize)]
struct StartDrillForm {
    csrf: Option<String>,
    project: Option<String>,
}

/// "Run a drill now": starts one and shows it on the drills page.
async fn start_drill(
    State(d): State<Dashboard>,
    operator: Operator,
    Form(form): Form<StartDrillForm>,
) -> PageResult {
    check_csrf(
        &operator,
        &CsrfForm {
            csrf: form.csrf,
            resolution: None,
        },
    )?;
    let project = d.project(form.project.as_deref())?;
    let actor = d.may(&operator, &project, Action::StartDrill)?;
    let config = d
        .app
        .config
        .projects
        .get(&project)
        .ok_or(PageError::new(StatusCode::NOT_FOUND, "No such project"))?;
    let drill = crate::drill::runner::start(
        d.app.store.as_ref(),
        config,
        crate::run::BILLING_WORKFLOW,
        crate::drill::DrillTrigger::Dashboard,
        &actor,
    )
    .await?;
    tracing::info!(drill_id = %drill.id, operator = %operator.0.operator, "drill started on the dashboard");
    Ok(Redirect::to(&format!("/drills?project={project}")).into_response())
}

#[derive(Deserialize, Default)]
struct ProjectQuery {
    project: Option<String>,
    cursor: Option<String>,
    format: Option<String>,
}

/// A project's API keys, for an admin.
async fn keys_page(
    State(d): State<Dashboard>,
    operator: Operator,
    Query(q): Query<ProjectQuery>,
) -> PageResult {
    let project = d.project(q.project.as_deref())?;
    d.may(&operator, &project, Action::ManageKeys)?;
    let keys = d.app.store.list_keys(&project).await?;
    let configured = d.app.config.projects[&project].api_key.is_some();
    Ok(d.render(
        "keys",
        Some(&operator),
        views::keys_page(&project, &keys, None, configured),
    ))
}

/// The key form: a name, scopes (`scope`, repeated) and an expiry.
async fn create_key(
    State(d): State<Dashboard>,
    operator: Operator,
    body: axum::body::Bytes,
) -> PageResult {
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    check_csrf(
        &operator,
        &CsrfForm {
            csrf: field("csrf"),
            resolution: None,
        },
    )?;
    let project = d.project(field("project").as_deref())?;
    let actor = d.may(&operator, &project, Action::ManageKeys)?;
    let bad = |why: String| PageError::new(StatusCode::BAD_REQUEST, why);
    let name = field("name").unwrap_or_default();
    let mut scopes = Vec::new();
    for (_, value) in form.iter().filter(|(k, _)| k == "scope") {
        scopes.push(
            value
                .parse::<crate::access::Scope>()
                .map_err(|e| bad(e.to_string()))?,
        );
    }
    let now = crate::now();
    let expires_at = match field("expires_in").as_deref().map(str::trim) {
        None | Some("") => None,
        Some(text) => Some(crate::run::after(
            now,
            humantime::parse_duration(text)
                .map_err(|_| bad(format!("`{text}` is not a duration such as 90d")))?,
        )),
    };
    let request = crate::access::keys::KeyRequest {
        project: &project,
        name: name.trim(),
        scopes,
        expires_at,
        test: false,
        created_by: &actor.name,
    };
    if let Some(why) = request.refusal(now) {
        return Err(bad(why));
    }
    let issued = crate::access::keys::issue(request, now);
    d.app.store.create_key(&issued.key, &actor).await?;
    let keys = d.app.store.list_keys(&project).await?;
    let configured = d.app.config.projects[&project].api_key.is_some();
    let mut page = d.render(
        "keys",
        Some(&operator),
        views::keys_page(
            &project,
            &keys,
            Some((&issued.key, &issued.secret)),
            configured,
        ),
    );
    *page.status_mut() = StatusCode::CREATED;
    Ok(page)
}

#[derive(Deserialize)]
struct RevokeForm {
    csrf: Option<String>,
    project: Option<String>,
}

async fn revoke_key(
    State(d): State<Dashboard>,
    operator: Operator,
    Path(id): Path<String>,
    Form(form): Form<RevokeForm>,
) -> PageResult {
    check_csrf(
        &operator,
        &CsrfForm {
            csrf: form.csrf,
            resolution: None,
        },
    )?;
    let project = d.project(form.project.as_deref())?;
    let actor = d.may(&operator, &project, Action::ManageKeys)?;
    let id = uuid::Uuid::parse_str(&id)
        .map_err(|_| PageError::new(StatusCode::NOT_FOUND, "Not found"))?;
    d.app
        .store
        .revoke_key(&project, id, &actor, crate::now())
        .await?;
    Ok(Redirect::to(&format!("/keys?project={project}")).into_response())
}

/// A project's audit log, for an admin; `format=jsonl` exports it.
async fn audit_page(
    State(d): State<Dashboard>,
    operator: Operator,
    Query(q): Query<ProjectQuery>,
) -> PageResult {
    let project = d.project(q.project.as_deref())?;
    d.may(&operator, &project, Action::ReadAudit)?;
    let every_project = d
        .app
        .config
        .projects
        .keys()
        .all(|p| d.may(&operator, p, Action::ReadAudit).is_ok());
    let filter = crate::store::AuditFilter {
        project: project.clone(),
        sign_ins: every_project,
        action: None,
        actor: None,
        limit: PAGE_SIZE,
        cursor: cursor(q.cursor.as_deref()),
    };
    if q.format.as_deref() == Some("jsonl") {
        return Ok(crate::api::access::audit_lines(d.app.store.clone(), filter));
    }
    let page = d.app.store.audit_log(&filter).await?;
    let next = page.next_cursor.as_ref().map(|cursor| {
        views::query_url(
            "/audit",
            &[
                ("project", Some(project.as_str())),
                ("cursor", Some(cursor.as_str())),
            ],
        )
    });
    Ok(d.render(
        "audit",
        Some(&operator),
        views::audit_page(&project, &page.data, next),
    ))
}
