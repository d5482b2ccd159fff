//! The HTTP contract as a whole: `docs/CONTRACT.md` kept true, status
//! codes and error shapes (in process and over a socket), the OpenAPI
//! document, and the shapes of the API's and the alerts' JSON pinned for a
//! fixed scenario.

mod access;
mod contract;
mod endpoints;
mod openapi;
mod router;
mod shapes;
