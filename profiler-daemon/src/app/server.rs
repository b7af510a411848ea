//! The server side of `run`, checked before anything starts: URL, credentials, labels, spool.

use std::path::PathBuf;

use anyhow::Result;

use crate::{
    config::{RunArgs, DEFAULT_DUMP_DIR},
    export::{
        parse_header, parse_url, read_secret, Auth, Client, DeliveryConfig, ServerConfig,
        ServerConfigError, Spool,
    },
    targets::LabelConfig,
};

/// What `run` needs to start delivery.
pub(super) struct ServerSetup {
    pub client: Client,
    pub spool: Spool,
    pub delivery: DeliveryConfig,
}

/// Validates `--server` and its companions; `None` when no server is configured.
pub(super) fn prepare_server(args: &RunArgs) -> Result<Option<ServerSetup>> {
    let Some(client) = server_client(args)? else {
        return Ok(None);
    };
    let delivery = &args.server.delivery;
    let spool = Spool::open(&delivery.spool_dir, delivery.spool_max_bytes)?;
    let config = DeliveryConfig {
        retries: delivery.upload_retries,
        max_backoff: delivery.retry_max_backoff,
        queue: delivery.upload_queue as usize,
        dump_dir: args
            .dump_dir()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DUMP_DIR)),
    };
    Ok(Some(ServerSetup {
        client,
        spool,
        delivery: config,
    }))
}

/// The series labels of `--service-name` and `--tag`, before the sections are known.
pub(super) fn base_labels(args: &RunArgs) -> Result<LabelConfig> {
    let labels = &args.server.labels;
    Ok(LabelConfig::new(labels.service_name.clone(), &labels.tags)?)
}

/// The HTTP client of `--server` and its companions, without touching the spool; the labels
/// are checked too, so that a bad tag fails here and not at the first upload.
pub(super) fn server_client(args: &RunArgs) -> Result<Option<Client>> {
    let server = &args.server.client;
    let Some(url) = &server.server else {
        return Ok(None);
    };
    let url = parse_url(url)?;
    base_labels(args)?;
    let password = read_secret(
        "--basic-auth-password-file",
        server.basic_auth_password_file.as_ref(),
        "PROFILERD_BASIC_AUTH_PASSWORD",
    )?;
    let token = read_secret(
        "--bearer-token-file",
        server.bearer_token_file.as_ref(),
        "PROFILERD_BEARER_TOKEN",
    )?;
    // Precedence as the server's clients use it: basic auth, then bearer token.
    let auth = match (&server.basic_auth_user, password, token) {
        (Some(user), Some(password), _) => Auth::Basic {
            user: user.clone(),
            password,
        },
        (Some(_), None, _) => return Err(ServerConfigError::MissingPassword.into()),
        (None, _, Some(token)) => Auth::Bearer(token),
        (None, _, None) => Auth::None,
    };
    let headers = server
        .headers
        .iter()
        .map(|h| parse_header(h))
        .collect::<Result<Vec<_>, _>>()?;
    let client = Client::new(ServerConfig {
        url,
        protocol: server.protocol,
        timeout: server.upload_timeout,
        auth,
        tenant: server.tenant_id.clone(),
        headers,
        // At most 16 MiB by its parser.
        max_response_bytes: usize::try_from(server.upload_response_max_bytes).unwrap_or(usize::MAX),
    })?;
    Ok(Some(client))
}
