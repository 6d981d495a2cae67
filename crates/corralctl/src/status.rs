//! Runtime-wide verbs: `version` and `info`.

use anyhow::{Context, Result};
use clap::Args;
use cri_proto::v1::{StatusRequest, VersionRequest, VersionResponse};

use crate::client::Cri;
use crate::output::{print_document, status_document, DocumentFormat, OutputFormat};

/// The CRI version this client speaks, sent in VersionRequest as the kubelet does.
const CLIENT_API_VERSION: &str = "0.1.0";

/// `version`: print the runtime's name and versions.
#[derive(Debug, Args)]
pub struct VersionArgs {
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

/// `info`: print the runtime's status and verbose information.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = DocumentFormat::Json)]
    pub output: DocumentFormat,
}

/// Prints the Version response.
pub async fn version(cri: &mut Cri, args: VersionArgs) -> Result<()> {
    let request = VersionRequest {
        version: CLIENT_API_VERSION.to_string(),
    };
    let response = cri.runtime.version(request).await?.into_inner();
    match args.output.document() {
        Some(format) => print_document(&response, format),
        None => {
            print!("{}", version_lines(&response));
            Ok(())
        }
    }
}

/// The `version` text, aligned as crictl prints it.
fn version_lines(response: &VersionResponse) -> String {
    format!(
        "Version:  {}\nRuntimeName:  {}\nRuntimeVersion:  {}\nRuntimeApiVersion:  {}\n",
        response.version,
        response.runtime_name,
        response.runtime_version,
        response.runtime_api_version
    )
}

/// Prints the verbose Status response: conditions, handlers, features and the info map.
pub async fn info(cri: &mut Cri, args: InfoArgs) -> Result<()> {
    let response = cri
        .runtime
        .status(StatusRequest { verbose: true })
        .await?
        .into_inner();
    let mut document = status_document(&response.status, &response.info)?;
    document.insert(
        "runtimeHandlers".to_string(),
        serde_json::to_value(response.runtime_handlers).context("encoding runtime handlers")?,
    );
    document.insert(
        "features".to_string(),
        serde_json::to_value(response.features).context("encoding features")?,
    );
    print_document(&document, args.output)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_text() {
        let response = VersionResponse {
            version: "0.1.0".into(),
            runtime_name: "corral".into(),
            runtime_version: "0.1.0".into(),
            runtime_api_version: "v1".into(),
        };
        assert_eq!(
            version_lines(&response),
            "Version:  0.1.0\nRuntimeName:  corral\nRuntimeVersion:  0.1.0\nRuntimeApiVersion:  v1\n"
        );
    }
}
