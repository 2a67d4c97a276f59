//! Email as `.eml` files in a directory: what the master does with email
//! when no SMTP server is configured (SPEC §7).

use std::path::Path;

use tokio::io::AsyncWriteExt;

use super::transport::DeliveryError;
use super::Notification;

/// Writes `<dir>/<id>.eml` so that a reader never sees half a message: the
/// bytes go to a dot-named temporary file (ignored by `*.eml` globs), are
/// synced, and the file is renamed into place. Writing the same id again
/// replaces the file with identical content, so a redelivery is harmless.
pub(super) async fn write(dir: &Path, n: &Notification, bytes: &[u8]) -> Result<(), DeliveryError> {
    // Any I/O failure here (full disk, permissions) is something an operator
    // can fix while the outbox keeps the notification, so it is temporary.
    let io_err = |what: &str, path: &Path, err: std::io::Error| {
        DeliveryError::Temporary(format!("cannot {what} {}: {err}", path.display()))
    };
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|err| io_err("create directory", dir, err))?;

    let target = dir.join(format!("{}.eml", n.id));
    // A fresh name per attempt so two concurrent writers of the same id never
    // interleave their bytes in one temporary file.
    let temp = dir.join(format!(".{}.{}.tmp", n.id, uuid::Uuid::new_v4()));
    let written = async {
        let mut file = tokio::fs::File::create(&temp).await?;
        file.write_all(bytes).await?;
        file.sync_all().await?;
        tokio::fs::rename(&temp, &target).await
    }
    .await;
    if let Err(err) = written {
        // Best effort: the temporary file is useless now, and hidden anyway.
        let _ = tokio::fs::remove_file(&temp).await;
        return Err(io_err("write", &target, err));
    }
    // Sync the directory so the rename survives a crash before the outbox
    // forgets the notification. Some systems refuse to fsync a directory;
    // the file itself is already durable, so that is not worth failing for.
    if let Ok(dir_handle) = tokio::fs::File::open(dir).await {
        let _ = dir_handle.sync_all().await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::notify::transport::tests::{deliver, header, headers, notification};
    use crate::notify::transport::Mailer;

    #[tokio::test]
    async fn eml_dir_writes_one_whole_message_per_notification() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("outbox").join("mail");
        let mailer = Mailer::eml_dir(&dir);
        let n = notification();

        deliver(&mailer, &n).await.unwrap();
        // Delivering the same notification again is harmless.
        deliver(&mailer, &n).await.unwrap();

        let names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec![format!("{}.eml", n.id)], "no temporary files left");

        let text = std::fs::read_to_string(dir.join(format!("{}.eml", n.id))).unwrap();
        let headers = headers(&text);
        assert_eq!(
            header(&headers, "Subject"),
            Some("[amon coal] Alarm 3: machine web0 (b0e4a9d6-3c1f-4e8a-9d2b-7f5e6a1c2d3e) is down")
        );
        assert_eq!(
            header(&headers, "Message-ID"),
            Some("<6f1c2a8e-8d4b-4c55-9f1e-2b7a51c0d001@amon.coal.invalid>")
        );
        assert_eq!(header(&headers, "To"), Some("jill@example.com"));
        assert!(text.contains("Machine web0 (b0e4a9d6-3c1f-4e8a-9d2b-7f5e6a1c2d3e) is down."));
    }
}
