//! S3 calls: objects, multipart uploads, and a streaming upload that turns
//! a stream of bytes into parts (uploaded a few at a time, from memory:
//! nothing is written to local disk).
//!
//! Addressing: AWS's endpoints use virtual-hosted buckets
//! (`https://BUCKET.s3.REGION.amazonaws.com/KEY`) when the bucket name
//! allows it; a custom endpoint (`AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`,
//! `custom_endpoint_ec2`) is addressed path-style (`ENDPOINT/BUCKET/KEY`).
use crate::client::{dns_suffix, Aws, Request, Response, Retry};
use crate::error::AwsError;
use crate::sigv4::{uri_encode, PathStyle};
use crate::xml::{self, text};
use bytes::{Bytes, BytesMut};
use futures_util::stream::{FuturesUnordered, StreamExt};
use std::time::Duration;

/// The smallest part S3 accepts (but the last).
pub const MIN_PART: usize = 5 << 20;
/// The most parts an upload may have.
pub const MAX_PARTS: u64 = 10_000;

/// What HeadObject tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub size: u64,
    pub etag: Option<String>,
}

/// An unfinished multipart upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    pub key: String,
    pub upload_id: String,
}

/// Server-side encryption headers (Packer's `s3_encryption`,
/// `s3_encryption_key`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sse {
    /// `AES256` or `aws:kms`.
    pub algorithm: Option<String>,
    pub kms_key_id: Option<String>,
}

impl Sse {
    fn headers(&self) -> Vec<(String, String)> {
        let mut h = Vec::new();
        if let Some(a) = &self.algorithm {
            h.push(("x-amz-server-side-encryption".into(), a.clone()));
            if a == "aws:kms" {
                if let Some(k) = &self.kms_key_id {
                    h.push((
                        "x-amz-server-side-encryption-aws-kms-key-id".into(),
                        k.clone(),
                    ));
                }
            }
        }
        h
    }
}

/// The S3 calls.
#[derive(Clone, Copy)]
pub struct S3<'a> {
    pub aws: &'a Aws,
}

/// Can `bucket` be a host name label (virtual-hosted addressing over
/// HTTPS)?
pub fn dns_compatible(bucket: &str) -> bool {
    (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !bucket.starts_with('-')
        && !bucket.ends_with('-')
}

impl<'a> S3<'a> {
    /// Base URL and path of `bucket`/`key` (`key` empty: the bucket).
    pub fn address(&self, bucket: &str, key: &str) -> (String, String) {
        let k = uri_encode(key, true);
        match &self.aws.endpoints.s3 {
            Some(e) => {
                let (base, path) = crate::client::split_endpoint(e);
                let prefix = path.trim_end_matches('/');
                if key.is_empty() {
                    (base, format!("{prefix}/{}", uri_encode(bucket, false)))
                } else {
                    (base, format!("{prefix}/{}/{k}", uri_encode(bucket, false)))
                }
            }
            None => {
                let r = &self.aws.region;
                let host = format!("s3.{r}.{}", dns_suffix(r));
                if dns_compatible(bucket) {
                    (format!("https://{bucket}.{host}"), format!("/{k}"))
                } else if key.is_empty() {
                    (format!("https://{host}"), format!("/{bucket}"))
                } else {
                    (format!("https://{host}"), format!("/{bucket}/{k}"))
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn request(
        &self,
        action: &str,
        method: reqwest::Method,
        bucket: &str,
        key: &str,
        query: &[(String, String)],
        headers: &[(String, String)],
        body: Bytes,
        retry: Retry,
        timeout: Option<Duration>,
    ) -> Result<Response, AwsError> {
        let (base, path) = self.address(bucket, key);
        let req = Request {
            service: "s3",
            action,
            method,
            base: &base,
            path: &path,
            query,
            headers,
            body,
            path_style: PathStyle::AsIs,
            s3: true,
            timeout,
        };
        self.aws
            .transport
            .send(&req, &self.aws.region, &self.aws.creds, retry)
            .await
    }

    /// CreateBucket (in this client's region).
    pub async fn create_bucket(&self, bucket: &str) -> Result<(), AwsError> {
        let body = if self.aws.region == "us-east-1" {
            Bytes::new()
        } else {
            Bytes::from(format!(
                "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><LocationConstraint>{}</LocationConstraint></CreateBucketConfiguration>",
                self.aws.region
            ))
        };
        match self
            .request(
                "CreateBucket",
                reqwest::Method::PUT,
                bucket,
                "",
                &[],
                &[],
                body,
                Retry::Idempotent,
                None,
            )
            .await
        {
            Err(e) if e.code() == Some("BucketAlreadyOwnedByYou") => Ok(()),
            r => r.map(|_| ()),
        }
    }

    /// PutObject of a whole body; the ETag.
    pub async fn put_object(
        &self,
        bucket: &str,
        key: &str,
        body: Bytes,
        sse: &Sse,
    ) -> Result<Option<String>, AwsError> {
        let timeout = part_timeout(body.len());
        let r = self
            .request(
                "PutObject",
                reqwest::Method::PUT,
                bucket,
                key,
                &[],
                &sse.headers(),
                body,
                Retry::Idempotent,
                Some(timeout),
            )
            .await?;
        Ok(r.header("etag"))
    }

    /// HeadObject; `None` when there is no such object.
    pub async fn head_object(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<ObjectInfo>, AwsError> {
        match self
            .request(
                "HeadObject",
                reqwest::Method::HEAD,
                bucket,
                key,
                &[],
                &[],
                Bytes::new(),
                Retry::Idempotent,
                None,
            )
            .await
        {
            Ok(r) => Ok(Some(ObjectInfo {
                size: r
                    .header("content-length")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0),
                etag: r.header("etag"),
            })),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// DeleteObject (deleting a missing object succeeds, as in S3).
    pub async fn delete_object(&self, bucket: &str, key: &str) -> Result<(), AwsError> {
        match self
            .request(
                "DeleteObject",
                reqwest::Method::DELETE,
                bucket,
                key,
                &[],
                &[],
                Bytes::new(),
                Retry::Idempotent,
                None,
            )
            .await
        {
            Err(e) if e.code() == Some("NoSuchKey") => Ok(()),
            r => r.map(|_| ()),
        }
    }

    /// CreateMultipartUpload; the upload id. (A failure may still have
    /// started an upload: [`S3::list_uploads`] finds it.)
    pub async fn create_multipart_upload(
        &self,
        bucket: &str,
        key: &str,
        sse: &Sse,
    ) -> Result<String, AwsError> {
        let q = vec![("uploads".to_string(), String::new())];
        let r = self
            .request(
                "CreateMultipartUpload",
                reqwest::Method::POST,
                bucket,
                key,
                &q,
                &sse.headers(),
                Bytes::new(),
                Retry::SafeOnly,
                None,
            )
            .await?;
        let body = r.text();
        let doc =
            roxmltree::Document::parse(&body).map_err(|e| proto("CreateMultipartUpload", e))?;
        text(xml::root(&doc), "UploadId")
            .ok_or_else(|| proto("CreateMultipartUpload", "no UploadId"))
    }

    /// UploadPart; the part's ETag.
    pub async fn upload_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        number: u32,
        body: Bytes,
    ) -> Result<String, AwsError> {
        let q = vec![
            ("partNumber".to_string(), number.to_string()),
            ("uploadId".to_string(), upload_id.to_string()),
        ];
        let timeout = part_timeout(body.len());
        let r = self
            .request(
                "UploadPart",
                reqwest::Method::PUT,
                bucket,
                key,
                &q,
                &[],
                body,
                Retry::Idempotent,
                Some(timeout),
            )
            .await?;
        r.header("etag")
            .ok_or_else(|| proto("UploadPart", "no ETag"))
    }

    /// CompleteMultipartUpload of `parts` (number, ETag), in order.
    pub async fn complete_multipart_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[(u32, String)],
    ) -> Result<Option<String>, AwsError> {
        let q = vec![("uploadId".to_string(), upload_id.to_string())];
        let mut body = String::from(
            "<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">",
        );
        for (n, etag) in parts {
            body.push_str(&format!(
                "<Part><PartNumber>{n}</PartNumber><ETag>{}</ETag></Part>",
                etag.replace('&', "&amp;").replace('<', "&lt;")
            ));
        }
        body.push_str("</CompleteMultipartUpload>");
        let r = self
            .request(
                "CompleteMultipartUpload",
                reqwest::Method::POST,
                bucket,
                key,
                &q,
                &[("content-type".into(), "application/xml".into())],
                Bytes::from(body),
                Retry::Idempotent,
                Some(Duration::from_secs(600)),
            )
            .await?;
        // S3 may answer 200 with an error inside.
        let text_body = r.text();
        if let Some((code, message, rid)) = crate::error::parse_error_body(&text_body) {
            return Err(AwsError::Api {
                service: "s3",
                action: "CompleteMultipartUpload".into(),
                status: r.status,
                code,
                message,
                request_id: rid,
            });
        }
        let doc = roxmltree::Document::parse(&text_body).ok();
        Ok(doc.and_then(|d| text(xml::root(&d), "ETag")))
    }

    /// AbortMultipartUpload; an upload already gone counts as done.
    pub async fn abort_multipart_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<(), AwsError> {
        let q = vec![("uploadId".to_string(), upload_id.to_string())];
        match self
            .request(
                "AbortMultipartUpload",
                reqwest::Method::DELETE,
                bucket,
                key,
                &q,
                &[],
                Bytes::new(),
                Retry::Idempotent,
                None,
            )
            .await
        {
            Err(e) if e.is_not_found() => Ok(()),
            r => r.map(|_| ()),
        }
    }

    /// Unfinished multipart uploads of keys starting with `prefix`.
    pub async fn list_uploads(&self, bucket: &str, prefix: &str) -> Result<Vec<Upload>, AwsError> {
        let q = vec![
            ("uploads".to_string(), String::new()),
            ("prefix".to_string(), prefix.to_string()),
        ];
        let r = self
            .request(
                "ListMultipartUploads",
                reqwest::Method::GET,
                bucket,
                "",
                &q,
                &[],
                Bytes::new(),
                Retry::Idempotent,
                None,
            )
            .await?;
        let body = r.text();
        let doc =
            roxmltree::Document::parse(&body).map_err(|e| proto("ListMultipartUploads", e))?;
        Ok(doc
            .descendants()
            .filter(|n| n.has_tag_name("Upload") || n.tag_name().name() == "Upload")
            .filter_map(|u| {
                Some(Upload {
                    key: text(u, "Key")?,
                    upload_id: text(u, "UploadId")?,
                })
            })
            .filter(|u| u.key.starts_with(prefix))
            .collect())
    }

    /// Remove `key` and every unfinished upload to it (the cleanup of an
    /// upload, whatever state it was left in).
    pub async fn remove_object_and_uploads(&self, bucket: &str, key: &str) -> Result<(), AwsError> {
        for u in self.list_uploads(bucket, key).await? {
            if u.key == key {
                self.abort_multipart_upload(bucket, key, &u.upload_id)
                    .await?;
            }
        }
        self.delete_object(bucket, key).await
    }

    /// Upload what arrives on `input` as `key`: one PutObject when it all
    /// fits in one part, else a multipart upload of `part_size` parts,
    /// `concurrency` at a time, from memory. `progress` is told the bytes
    /// of each part stored. On any failure the multipart upload is aborted
    /// (when the answer to its creation came; otherwise the caller's
    /// cleanup finds it with [`S3::remove_object_and_uploads`]).
    /// `on_upload_id` is told the upload id as soon as it is known.
    #[allow(clippy::too_many_arguments)]
    pub async fn upload_stream(
        &self,
        bucket: &str,
        key: &str,
        mut input: tokio::sync::mpsc::Receiver<Result<Bytes, String>>,
        part_size: usize,
        concurrency: usize,
        sse: &Sse,
        progress: &(dyn Fn(u64) + Send + Sync),
        on_upload_id: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<u64, AwsError> {
        let part_size = part_size.max(MIN_PART);
        let input_err = |m: String| AwsError::Transport {
            service: "s3",
            action: "reading the input".into(),
            message: m,
            sent: false,
        };
        // The first part decides between PutObject and a multipart upload.
        let mut buf = BytesMut::with_capacity(part_size);
        let mut ended = false;
        while buf.len() < part_size {
            match input.recv().await {
                Some(Ok(b)) => buf.extend_from_slice(&b),
                Some(Err(m)) => return Err(input_err(m)),
                None => {
                    ended = true;
                    break;
                }
            }
        }
        if ended {
            let n = buf.len() as u64;
            self.put_object(bucket, key, buf.freeze(), sse).await?;
            progress(n);
            return Ok(n);
        }
        let upload_id = self.create_multipart_upload(bucket, key, sse).await?;
        on_upload_id(&upload_id);
        let r = self
            .upload_parts(
                bucket,
                key,
                &upload_id,
                buf,
                &mut input,
                part_size,
                concurrency,
                progress,
            )
            .await;
        match r {
            Ok((parts, total)) => {
                match self
                    .complete_multipart_upload(bucket, key, &upload_id, &parts)
                    .await
                {
                    Ok(_) => Ok(total),
                    Err(e) => {
                        let _ = self.abort_multipart_upload(bucket, key, &upload_id).await;
                        Err(e)
                    }
                }
            }
            Err(e) => {
                let _ = self.abort_multipart_upload(bucket, key, &upload_id).await;
                Err(e)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn upload_parts(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        first: BytesMut,
        input: &mut tokio::sync::mpsc::Receiver<Result<Bytes, String>>,
        part_size: usize,
        concurrency: usize,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<(Vec<(u32, String)>, u64), AwsError> {
        let mut running = FuturesUnordered::new();
        let mut parts: Vec<(u32, String)> = Vec::new();
        let mut total = 0u64;
        let mut number = 0u32;
        let mut buf = first;
        let mut ended = false;
        loop {
            // Fill a part (the first one is full already).
            while !ended && buf.len() < part_size {
                match input.recv().await {
                    Some(Ok(b)) => {
                        let room = part_size - buf.len();
                        if b.len() <= room {
                            buf.extend_from_slice(&b);
                        } else {
                            buf.extend_from_slice(&b[..room]);
                            // The rest starts the next part.
                            let rest = b.slice(room..);
                            number += 1;
                            let body =
                                std::mem::replace(&mut buf, BytesMut::with_capacity(part_size))
                                    .freeze();
                            buf.extend_from_slice(&rest);
                            total += body.len() as u64;
                            running.push(self.part(bucket, key, upload_id, number, body));
                            while running.len() >= concurrency.max(1) {
                                let (n, etag, len) = running.next().await.expect("not empty")?;
                                parts.push((n, etag));
                                progress(len);
                            }
                        }
                    }
                    Some(Err(m)) => {
                        return Err(AwsError::Transport {
                            service: "s3",
                            action: "reading the input".into(),
                            message: m,
                            sent: false,
                        })
                    }
                    None => ended = true,
                }
            }
            if !buf.is_empty() {
                number += 1;
                if u64::from(number) > MAX_PARTS {
                    return Err(AwsError::Config(format!(
                        "upload of {key}: more than {MAX_PARTS} parts of {part_size} bytes"
                    )));
                }
                let body = std::mem::replace(&mut buf, BytesMut::with_capacity(part_size)).freeze();
                total += body.len() as u64;
                running.push(self.part(bucket, key, upload_id, number, body));
            }
            while running.len() >= concurrency.max(1) || (ended && !running.is_empty()) {
                let (n, etag, len) = running.next().await.expect("not empty")?;
                parts.push((n, etag));
                progress(len);
            }
            if ended && running.is_empty() {
                break;
            }
        }
        parts.sort_by_key(|p| p.0);
        Ok((parts, total))
    }

    fn part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        number: u32,
        body: Bytes,
    ) -> impl std::future::Future<Output = Result<(u32, String, u64), AwsError>> + '_ {
        let (bucket, key, upload_id) = (bucket.to_string(), key.to_string(), upload_id.to_string());
        async move {
            let len = body.len() as u64;
            let etag = self
                .upload_part(&bucket, &key, &upload_id, number, body)
                .await?;
            Ok((number, etag, len))
        }
    }
}

/// A part's request may take as long as a slow link needs for it (1 MiB/s),
/// at least two minutes.
fn part_timeout(len: usize) -> Duration {
    Duration::from_secs(120 + (len as u64 >> 20))
}

fn proto(action: &str, m: impl std::fmt::Display) -> AwsError {
    AwsError::Protocol {
        service: "s3",
        action: action.into(),
        message: m.to_string(),
    }
}

/// The part size for an object of about `size` bytes: `preferred`, or more
/// so that it fits in 10,000 parts.
pub fn part_size_for(size: u64, preferred: usize) -> usize {
    let min_for_count = size.div_ceil(MAX_PARTS) as usize;
    preferred.max(min_for_count).max(MIN_PART)
}

impl Aws {
    /// The S3 calls.
    pub fn s3(&self) -> S3<'_> {
        S3 { aws: self }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names() {
        assert!(dns_compatible("my-bucket-1"));
        assert!(!dns_compatible("My_Bucket"));
        assert!(!dns_compatible("a.b.c"));
        assert!(!dns_compatible("ab"));
        assert_eq!(part_size_for(1 << 30, 16 << 20), 16 << 20);
        assert_eq!(
            part_size_for(1 << 40, 16 << 20),
            ((1u64 << 40).div_ceil(10_000)) as usize
        );
    }
}
