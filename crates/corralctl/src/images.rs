//! Image verbs: `pull`, `images`, `inspecti`, `rmi`, `imagefsinfo`.

use anyhow::{bail, Result};
use clap::Args;
use cri_proto::v1::{
    Image, ImageFilter, ImageFsInfoRequest, ImageSpec, ImageStatusRequest, ListImagesRequest,
    ListImagesResponse, PullImageRequest, RemoveImageRequest,
};
use serde_json::json;

use crate::client::Cri;
use crate::flags::auth_config;
use crate::output::{
    human_size, print_document, short_id, status_document, DocumentFormat, ListFormat, Table,
};

/// Shown where an image has no tag or digest.
const NONE: &str = "<none>";

/// `pull`: pull an image from a registry.
#[derive(Debug, Args)]
pub struct PullArgs {
    /// Registry credentials, USERNAME[:PASSWORD].
    #[arg(long, env = "CRICTL_CREDS", hide_env_values = true)]
    pub creds: Option<String>,
    /// Registry credentials as base64 of USERNAME:PASSWORD.
    #[arg(long, env = "CRICTL_AUTH", hide_env_values = true)]
    pub auth: Option<String>,
    /// Image reference, NAME[:TAG|@DIGEST].
    pub image: String,
}

/// `images`: list images.
#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Add a DIGEST column.
    #[arg(long)]
    pub digests: bool,
    /// Output flags shared by the list verbs.
    #[command(flatten)]
    pub format: ListFormat,
    /// Only images matching this reference.
    pub image: Option<String>,
}

/// `inspecti`: print the verbose status of images.
#[derive(Debug, Args)]
pub struct InspectiArgs {
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = DocumentFormat::Json)]
    pub output: DocumentFormat,
    /// Image references or IDs.
    #[arg(required = true)]
    pub images: Vec<String>,
}

/// `rmi`: remove images.
#[derive(Debug, Args)]
pub struct RmiArgs {
    /// Remove every image.
    #[arg(short, long)]
    pub all: bool,
    /// Image references or IDs.
    #[arg(required_unless_present = "all")]
    pub images: Vec<String>,
}

/// `imagefsinfo`: print the usage of the image filesystem.
#[derive(Debug, Args)]
pub struct ImagefsinfoArgs {
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = DocumentFormat::Json)]
    pub output: DocumentFormat,
}

fn image_spec(image: &str) -> ImageSpec {
    ImageSpec {
        image: image.to_string(),
        ..Default::default()
    }
}

/// Pulls an image and prints the reference the runtime stored it under.
pub async fn pull(cri: &mut Cri, args: PullArgs) -> Result<()> {
    if args.image.is_empty() {
        bail!("image name cannot be empty");
    }
    let request = PullImageRequest {
        image: Some(image_spec(&args.image)),
        auth: auth_config(args.creds.as_deref(), args.auth.as_deref())?,
        sandbox_config: None,
    };
    let response = cri.images.pull_image(request).await?.into_inner();
    println!("Image is up to date for {}", response.image_ref);
    Ok(())
}

/// Lists images as a table, IDs, details, JSON or YAML.
pub async fn images(cri: &mut Cri, args: ImagesArgs) -> Result<()> {
    let request = ListImagesRequest {
        filter: args.image.as_deref().map(|image| ImageFilter {
            image: Some(image_spec(image)),
        }),
    };
    let mut images = cri.images.list_images(request).await?.into_inner().images;
    sort_images(&mut images);

    if let Some(format) = args.format.output.document() {
        return print_document(&ListImagesResponse { images }, format);
    }
    if args.format.quiet {
        for image in &images {
            println!("{}", image.id);
        }
    } else if args.format.verbose {
        for image in &images {
            print!("{}", image_details(image));
        }
    } else {
        image_table(&images, args.digests, args.format.no_trunc).print();
    }
    Ok(())
}

/// Prints `{"status": ..., "info": ...}` for each image (a list when more than one).
pub async fn inspecti(cri: &mut Cri, args: InspectiArgs) -> Result<()> {
    let mut documents = Vec::new();
    for reference in &args.images {
        let request = ImageStatusRequest {
            image: Some(image_spec(reference)),
            verbose: true,
        };
        let response = cri.images.image_status(request).await?.into_inner();
        let Some(image) = response.image else {
            bail!("no such image {reference:?}");
        };
        documents.push(status_document(&image, &response.info)?);
    }
    match documents.as_slice() {
        [single] => print_document(single, args.output),
        all => print_document(all, args.output),
    }
}

/// Removes each image and prints the tags (or digests) that went with it.
pub async fn rmi(cri: &mut Cri, args: RmiArgs) -> Result<()> {
    let mut references = args.images;
    if args.all {
        let all = cri
            .images
            .list_images(ListImagesRequest::default())
            .await?
            .into_inner()
            .images;
        references.extend(all.into_iter().map(|image| image.id));
    }
    for reference in &references {
        let request = ImageStatusRequest {
            image: Some(image_spec(reference)),
            verbose: false,
        };
        let Some(image) = cri.images.image_status(request).await?.into_inner().image else {
            bail!("no such image {reference:?}");
        };
        let request = RemoveImageRequest {
            image: Some(image_spec(reference)),
        };
        cri.images.remove_image(request).await?;
        let names = if image.repo_tags.is_empty() {
            &image.repo_digests
        } else {
            &image.repo_tags
        };
        if names.is_empty() {
            println!("Deleted: {}", image.id);
        }
        for name in names {
            println!("Deleted: {name}");
        }
    }
    Ok(())
}

/// Prints the image and container filesystem usage as crictl does (`{"status": ...}`).
pub async fn imagefsinfo(cri: &mut Cri, args: ImagefsinfoArgs) -> Result<()> {
    let response = cri
        .images
        .image_fs_info(ImageFsInfoRequest {})
        .await?
        .into_inner();
    print_document(&json!({ "status": response }), args.output)
}

/// Orders images as crictl lists them: tagged images by first tag, then the others by first
/// digest, then by ID.
/// `corralctl image ...`.
#[derive(Debug, clap::Subcommand)]
pub enum ImageCommand {
    /// Load images from an OCI image layout directory, or a `docker save` / OCI layout tar
    /// archive (gzip or zstd compressed or not), into corrald's image store.
    Import(ImportArgs),
}

/// `corralctl image import PATH`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The layout directory or archive; relative paths are taken from the current directory.
    pub path: std::path::PathBuf,
}

/// Imports images through corrald's admin service (corrald owns the image store).
pub async fn import(cri: &mut Cri, args: ImportArgs) -> Result<()> {
    let path = std::path::absolute(&args.path)?;
    let imported = cri
        .admin
        .import_image(cri_proto::admin::ImportImageRequest {
            path: path.to_string_lossy().into_owned(),
        })
        .await?
        .into_inner()
        .images;
    for image in imported {
        let names = if image.repo_tags.is_empty() {
            image.repo_digests.join(", ")
        } else {
            image.repo_tags.join(", ")
        };
        println!("Imported {} {names}", image.id);
    }
    Ok(())
}

pub fn sort_images(images: &mut [Image]) {
    images.sort_by(|a, b| sort_key(a).cmp(&sort_key(b)));
}

fn sort_key(image: &Image) -> (bool, Option<&String>, bool, Option<&String>, &str) {
    let tag = image.repo_tags.first();
    let digest = image.repo_digests.first();
    (tag.is_none(), tag, digest.is_none(), digest, &image.id)
}

/// Splits `repo:tag` at the tag's colon (not a registry port's): `localhost:5000/x` has no tag.
pub fn split_repo_tag(reference: &str) -> (&str, &str) {
    match reference.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, tag),
        _ => (reference, NONE),
    }
}

/// The repository and digest of an image's first repo digest (`repo@sha256:...`).
pub fn repo_and_digest(image: &Image) -> (&str, &str) {
    image
        .repo_digests
        .first()
        .and_then(|d| d.split_once('@'))
        .unwrap_or((NONE, NONE))
}

/// The `images` table: `IMAGE  TAG  [DIGEST]  IMAGE ID  SIZE`, one row per tag.
pub fn image_table(images: &[Image], digests: bool, no_trunc: bool) -> Table {
    let mut header = vec!["IMAGE", "TAG"];
    if digests {
        header.push("DIGEST");
    }
    header.extend(["IMAGE ID", "SIZE"]);
    let mut table = Table::with_header(&header);
    for image in images {
        let (repo_from_digest, digest) = repo_and_digest(image);
        let (id, digest) = if no_trunc {
            (image.id.as_str(), digest)
        } else {
            (short_id(&image.id), short_id(digest))
        };
        let pairs: Vec<(&str, &str)> = if image.repo_tags.is_empty() {
            vec![(repo_from_digest, NONE)]
        } else {
            image.repo_tags.iter().map(|t| split_repo_tag(t)).collect()
        };
        for (repo, tag) in pairs {
            let mut row = vec![repo.to_string(), tag.to_string()];
            if digests {
                row.push(digest.to_string());
            }
            row.extend([id.to_string(), human_size(image.size)]);
            table.push(row);
        }
    }
    table
}

/// The `images -v` block of one image.
fn image_details(image: &Image) -> String {
    let mut out = format!("ID: {}\n", image.id);
    for tag in &image.repo_tags {
        out += &format!("RepoTags: {tag}\n");
    }
    for digest in &image.repo_digests {
        out += &format!("RepoDigests: {digest}\n");
    }
    if image.size != 0 {
        out += &format!("Size: {}\n", image.size);
    }
    if let Some(uid) = &image.uid {
        out += &format!("Uid: {}\n", uid.value);
    }
    if !image.username.is_empty() {
        out += &format!("Username: {}\n", image.username);
    }
    if image.pinned {
        out += "Pinned: true\n";
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(id: &str, tags: &[&str], digests: &[&str], size: u64) -> Image {
        Image {
            id: id.to_string(),
            repo_tags: tags.iter().map(|t| t.to_string()).collect(),
            repo_digests: digests.iter().map(|d| d.to_string()).collect(),
            size,
            ..Default::default()
        }
    }

    #[test]
    fn repo_tag_split_respects_registry_ports() {
        assert_eq!(
            split_repo_tag("docker.io/library/busybox:1.36"),
            ("docker.io/library/busybox", "1.36")
        );
        assert_eq!(
            split_repo_tag("localhost:5000/busybox:latest"),
            ("localhost:5000/busybox", "latest")
        );
        assert_eq!(
            split_repo_tag("localhost:5000/busybox"),
            ("localhost:5000/busybox", "<none>")
        );
        assert_eq!(split_repo_tag("busybox"), ("busybox", "<none>"));
    }

    #[test]
    fn table_rows_per_tag_with_short_ids_and_sizes() {
        let id = format!("sha256:{}", "0123456789abcdef".repeat(4));
        let digest = format!(
            "docker.io/library/busybox@sha256:{}",
            "fedcba9876543210".repeat(4)
        );
        let images = [
            image(
                &id,
                &[
                    "docker.io/library/busybox:1.36",
                    "docker.io/library/busybox:latest",
                ],
                &[&digest],
                4_263_936,
            ),
            image(
                "sha256:aaaa",
                &[],
                &["localhost:5000/pause@sha256:bbbb"],
                786,
            ),
        ];
        let rendered = image_table(&images, true, false).render();
        let expected = concat!(
            "IMAGE                       TAG                 DIGEST              IMAGE ID            SIZE\n",
            "docker.io/library/busybox   1.36                fedcba9876543       0123456789abc       4.26MB\n",
            "docker.io/library/busybox   latest              fedcba9876543       0123456789abc       4.26MB\n",
            "localhost:5000/pause        <none>              bbbb                aaaa                786B\n",
        );
        assert_eq!(rendered, expected);

        let without_digests = image_table(&images[1..], false, true).render();
        assert_eq!(
            without_digests.lines().nth(1),
            Some("localhost:5000/pause   <none>              sha256:aaaa         786B")
        );
    }

    #[test]
    fn image_without_tags_or_digests() {
        let images = [image("sha256:cccc", &[], &[], 0)];
        let rendered = image_table(&images, false, false).render();
        assert_eq!(
            rendered.lines().nth(1),
            Some("<none>              <none>              cccc                0B")
        );
    }

    #[test]
    fn sorting_by_tag_then_digest_then_id() {
        let mut images = vec![
            image("5", &[], &[], 0),
            image("4", &[], &["x@sha256:1"], 0),
            image("3", &["b:1"], &[], 0),
            image("2", &["a:1"], &[], 0),
            image("1", &[], &[], 0),
        ];
        sort_images(&mut images);
        let ids: Vec<&str> = images.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, ["2", "3", "4", "1", "5"]);
    }

    #[test]
    fn verbose_details() {
        let details = image_details(&image("sha256:x", &["a:1"], &["a@sha256:y"], 10));
        assert_eq!(
            details,
            "ID: sha256:x\nRepoTags: a:1\nRepoDigests: a@sha256:y\nSize: 10\n\n"
        );
    }
}
