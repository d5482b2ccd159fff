//! The OpenID Connect authorization code flow with PKCE, through the
//! `openidconnect` crate: it discovers the provider, builds the
//! authorization URL, exchanges the code and verifies the ID token (its
//! signature against the provider's keys, issuer, audience, expiry and
//! nonce). Which operator the verified identity is belongs to
//! [`crate::access::sso`]; the sign-in pages to `signin`.
//!
//! The provider's metadata is kept for a few minutes to begin sign-ins
//! (which need only its authorization endpoint), and discovered afresh,
//! with its keys, to finish each one, so that a rotated signing key is
//! picked up at once. ID tokens are accepted signed with an asymmetric
//! algorithm only, and, when they name an authorized party, only for
//! Assay.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreAuthenticationFlow, CoreErrorResponseType,
    CoreGenderClaim, CoreJsonWebKey, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm,
    CoreProviderMetadata, CoreRevocableToken, CoreRevocationErrorResponse,
    CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AccessTokenHash, AdditionalClaims, AsyncHttpClient, AuthorizationCode, Client, ClientId,
    ClientSecret, CsrfToken, EmptyExtraTokenFields, EndpointMaybeSet, EndpointNotSet, EndpointSet,
    IdTokenFields, IssuerUrl, Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier,
    RedirectUrl, RequestTokenError, Scope, StandardErrorResponse, StandardTokenResponse,
    TokenResponse,
};
use serde::{Deserialize, Serialize};

use crate::access::sso::Identity;
use crate::config::SsoSettings;

/// The largest answer read from the provider.
const MAX_ANSWER: usize = 1024 * 1024;
/// How long one request to the provider may take...
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// ...and finishing a sign-in (discovery, keys, the code's exchange), well
/// within the server's own request timeout.
const FINISH_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the metadata that begins sign-ins is kept.
const METADATA_TTL: Duration = Duration::from_secs(5 * 60);

/// The algorithms an ID token may be signed with: the provider's keys'
/// (never a MAC keyed by the client secret, nor `none`).
const SIGNING_ALGORITHMS: [CoreJwsSigningAlgorithm; 9] = [
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
    CoreJwsSigningAlgorithm::RsaSsaPssSha256,
    CoreJwsSigningAlgorithm::RsaSsaPssSha384,
    CoreJwsSigningAlgorithm::RsaSsaPssSha512,
    CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    CoreJwsSigningAlgorithm::EcdsaP384Sha384,
    CoreJwsSigningAlgorithm::EdDsa,
];

/// Every claim beside the standard ones, so that the groups can be read
/// from the claim the settings name.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct OtherClaims(serde_json::Map<String, serde_json::Value>);

impl AdditionalClaims for OtherClaims {}

type TokenFields = IdTokenFields<
    OtherClaims,
    EmptyExtraTokenFields,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;

type TokenAnswer = StandardTokenResponse<TokenFields, CoreTokenType>;

type SsoClient = Client<
    OtherClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    TokenAnswer,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// Why a sign-in through the provider did not finish.
#[derive(Debug, thiserror::Error)]
pub enum SsoError {
    /// The provider could not be reached or gave an unreadable answer.
    #[error("the identity provider did not answer as expected: {0}")]
    Unavailable(String),
    /// The provider refused (the user declined, the code was spent).
    #[error("the identity provider refused the sign-in: {0}")]
    Refused(String),
    /// The ID token failed verification.
    #[error("the identity provider's ID token was refused: {0}")]
    BadToken(String),
}

/// What a sign-in that is sent to the provider must remember.
pub struct Started {
    pub url: url::Url,
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
}

/// Talks to the identity provider; one per dashboard.
#[derive(Clone)]
pub struct Provider {
    http: Http,
    /// The metadata that begins sign-ins, with when it was discovered.
    metadata: Arc<Mutex<Option<(Instant, CoreProviderMetadata)>>>,
}

/// Assay's reqwest as `openidconnect`'s HTTP client.
#[derive(Clone)]
struct Http(reqwest::Client);

impl<'c> AsyncHttpClient<'c> for Http {
    type Error = ExchangeError;
    type Future = Pin<
        Box<dyn Future<Output = Result<openidconnect::HttpResponse, ExchangeError>> + Send + 'c>,
    >;

    fn call(&'c self, request: openidconnect::HttpRequest) -> Self::Future {
        Box::pin(exchange(&self.0, request))
    }
}

/// One HTTP exchange for `openidconnect`, over Assay's reqwest, with the
/// answer's size bounded.
async fn exchange(
    http: &reqwest::Client,
    request: openidconnect::HttpRequest,
) -> Result<openidconnect::HttpResponse, ExchangeError> {
    let (parts, body) = request.into_parts();
    let mut answer = http
        .request(parts.method, parts.uri.to_string())
        .headers(parts.headers)
        .body(body)
        .send()
        .await?;
    let mut response = openidconnect::http::Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        response = response.header(name, value);
    }
    let mut body = Vec::new();
    while let Some(chunk) = answer.chunk().await? {
        if body.len() + chunk.len() > MAX_ANSWER {
            return Err(ExchangeError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    response
        .body(body)
        .map_err(|e| ExchangeError::Unreadable(e.to_string()))
}

#[derive(Debug, thiserror::Error)]
enum ExchangeError {
    #[error("{0}")]
    Http(#[from] reqwest::Error),
    #[error("the answer is larger than 1 MiB")]
    TooLarge,
    #[error("the answer is unreadable: {0}")]
    Unreadable(String),
}

impl Provider {
    pub fn new() -> Provider {
        crate::install_crypto_provider();
        let http = reqwest::Client::builder()
            // Following a redirect would let an answer point Assay anywhere.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(REQUEST_TIMEOUT)
            .build()
            .unwrap_or_default();
        Provider {
            http: Http(http),
            metadata: Default::default(),
        }
    }

    /// The provider's metadata and keys, discovered now.
    async fn discover(&self, settings: &SsoSettings) -> Result<CoreProviderMetadata, SsoError> {
        let issuer = IssuerUrl::new(settings.issuer.clone())
            .map_err(|e| SsoError::Unavailable(format!("the issuer URL: {e}")))?;
        let metadata = CoreProviderMetadata::discover_async(issuer, &self.http)
            .await
            .map_err(|e| {
                SsoError::Unavailable(format!("discovery at {}: {}", settings.issuer, chain(&e)))
            })?;
        *self.metadata.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((Instant::now(), metadata.clone()));
        Ok(metadata)
    }

    /// The metadata discovered in the last few minutes, else afresh.
    async fn recent_metadata(
        &self,
        settings: &SsoSettings,
    ) -> Result<CoreProviderMetadata, SsoError> {
        let kept = self
            .metadata
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .filter(|(at, _)| at.elapsed() < METADATA_TTL)
            .map(|(_, metadata)| metadata.clone());
        match kept {
            Some(metadata) => Ok(metadata),
            None => self.discover(settings).await,
        }
    }

    fn client(
        settings: &SsoSettings,
        metadata: CoreProviderMetadata,
        redirect: &str,
    ) -> Result<SsoClient, SsoError> {
        let redirect = RedirectUrl::new(redirect.to_owned())
            .map_err(|e| SsoError::Unavailable(format!("the redirect URL: {e}")))?;
        Ok(SsoClient::from_provider_metadata(
            metadata,
            ClientId::new(settings.client_id.clone()),
            settings
                .client_secret
                .as_ref()
                .map(|s| ClientSecret::new(s.expose().to_owned())),
        )
        .set_redirect_uri(redirect))
    }

    /// Where to send the browser to sign in, with the `state`, nonce and
    /// PKCE verifier to keep until it comes back to `redirect`.
    pub async fn start(&self, settings: &SsoSettings, redirect: &str) -> Result<Started, SsoError> {
        let metadata = self.recent_metadata(settings).await?;
        let client = Provider::client(settings, metadata, redirect)?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .set_pkce_challenge(challenge);
        for scope in &settings.scopes {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let (url, state, nonce) = request.url();
        Ok(Started {
            url,
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
        })
    }

    /// Exchanges `code` for tokens and verifies the ID token against the
    /// nonce the sign-in began with; who it names. Bounded in time as a
    /// whole.
    pub async fn finish(
        &self,
        settings: &SsoSettings,
        redirect: &str,
        code: &str,
        nonce: &str,
        pkce_verifier: &str,
    ) -> Result<Identity, SsoError> {
        tokio::time::timeout(
            FINISH_TIMEOUT,
            self.exchange_and_verify(settings, redirect, code, nonce, pkce_verifier),
        )
        .await
        .map_err(|_| {
            SsoError::Unavailable(format!(
                "no answer within {}",
                crate::time::written(FINISH_TIMEOUT)
            ))
        })?
    }

    async fn exchange_and_verify(
        &self,
        settings: &SsoSettings,
        redirect: &str,
        code: &str,
        nonce: &str,
        pkce_verifier: &str,
    ) -> Result<Identity, SsoError> {
        let metadata = self.discover(settings).await?;
        let client = Provider::client(settings, metadata, redirect)?;
        let answer = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| SsoError::Unavailable(format!("the token endpoint: {e}")))?
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_owned()))
            .request_async(&self.http)
            .await
            .map_err(|e| match e {
                RequestTokenError::ServerResponse(refusal) => {
                    SsoError::Refused(match refusal.error_description() {
                        Some(why) => format!("{}: {why}", refusal.error()),
                        None => refusal.error().to_string(),
                    })
                }
                other => SsoError::Unavailable(format!("the token endpoint: {}", chain(&other))),
            })?;
        let id_token = answer
            .id_token()
            .ok_or_else(|| SsoError::BadToken("the answer has no ID token".to_owned()))?;
        let verifier = client
            .id_token_verifier()
            .set_allowed_algs(SIGNING_ALGORITHMS);
        let claims = id_token
            .claims(&verifier, &Nonce::new(nonce.to_owned()))
            .map_err(|e| SsoError::BadToken(chain(&e)))?;
        // The crate checks the audience; a token that also names the party
        // it was issued to must name Assay.
        if let Some(party) = claims.authorized_party()
            && party.as_str() != settings.client_id
        {
            return Err(SsoError::BadToken(format!(
                "the token was issued to `{}`, not to Assay",
                party.as_str()
            )));
        }
        // The access token is the one this ID token was issued with.
        if let Some(expected) = claims.access_token_hash() {
            let bad = |e: &dyn std::error::Error| SsoError::BadToken(chain(e));
            let algorithm = id_token.signing_alg().map_err(|e| bad(&e))?;
            let key = id_token.signing_key(&verifier).map_err(|e| bad(&e))?;
            let actual = AccessTokenHash::from_token(answer.access_token(), algorithm, key)
                .map_err(|e| bad(&e))?;
            if actual != *expected {
                return Err(SsoError::BadToken(
                    "the access token's hash (at_hash) does not match".to_owned(),
                ));
            }
        }
        let groups = match claims.additional_claims().0.get(&settings.groups_claim) {
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .filter_map(|g| g.as_str().map(str::to_owned))
                .collect(),
            Some(serde_json::Value::String(one)) => vec![one.clone()],
            _ => Vec::new(),
        };
        Ok(Identity {
            subject: claims.subject().as_str().to_owned(),
            email: claims.email().map(|e| e.as_str().to_owned()),
            email_verified: claims.email_verified(),
            groups,
        })
    }
}

/// An error with its causes, for the log and the audit entry.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
