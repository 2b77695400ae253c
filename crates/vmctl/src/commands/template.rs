//! `vmctl template save|list|show|delete`. `save` turns a stopped Ubuntu VM's disk into a
//! read-only base image in the image cache (`templates/NAME.qcow2`, flattened: no backing
//! file) and writes its settings as a saved template; `create ubuntu --template NAME` uses it.
//! The templates themselves are [`crate::templates`].

use std::path::PathBuf;
use std::time::Instant;

use hostio::Cmd;
use hypervisor::domain::parse::parse_domain;
use serde::Serialize;

use super::Ctx;
use crate::error::{Error, Result};
use crate::templates::{self, Found, Origin, Template, TemplateError};

/// A template and the VMs whose base image is its image.
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    #[serde(flatten)]
    pub found: Found,
    pub used_by: Vec<String>,
}

fn users(ctx: &Ctx, image: Option<&str>) -> Result<Vec<String>> {
    let Some(image) = image else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for rec in ctx.hv.list()? {
        let base = parse_domain(&rec.xml)
            .ok()
            .and_then(|f| f.metadata)
            .and_then(|m| m.base_image);
        if base.is_some_and(|b| b == std::path::Path::new(image)) {
            out.push(rec.name);
        }
    }
    Ok(out)
}

pub fn list(ctx: &Ctx) -> Result<Vec<Listed>> {
    templates::list(ctx)?
        .into_iter()
        .map(|found| {
            let used_by = users(ctx, found.template.image.as_deref())?;
            Ok(Listed { found, used_by })
        })
        .collect()
}

pub fn show(ctx: &Ctx, name: &str) -> Result<Listed> {
    let found = templates::load(ctx, name)?;
    let used_by = users(ctx, found.template.image.as_deref())?;
    Ok(Listed { found, used_by })
}

/// What `template save` made.
#[derive(Debug, Clone, Serialize)]
pub struct Saved {
    pub name: String,
    pub path: PathBuf,
    pub image: PathBuf,
    pub bytes: u64,
    pub template: Template,
    pub seconds: f64,
}

/// Flattens the stopped VM's system disk into `IMAGE_CACHE/templates/NAME.qcow2` (read-only,
/// 0444) and writes `STATE_DIR/templates/NAME.toml` with its settings. Made under a temporary
/// name and renamed at the end, so a failure leaves nothing and a reader never sees half.
pub fn save(ctx: &Ctx, vm: &str, name: &str, description: Option<&str>) -> Result<Saved> {
    let started = Instant::now();
    templates::validate_name(name)?;
    let rec = ctx.hv.require(vm)?;
    if rec.state.is_active() {
        return Err(Error::DomainRunning { name: vm.into() });
    }
    if let Ok(f) = templates::load(ctx, name) {
        return Err(TemplateError::Exists {
            name: name.into(),
            path: f.path,
        }
        .into());
    }
    let facts = parse_domain(&ctx.hv.inactive_xml(vm)?)?;
    let md = facts.metadata.clone().unwrap_or_default();
    if md.os != "ubuntu" {
        return Err(TemplateError::NotUbuntu {
            vm: vm.into(),
            os: md.os,
        }
        .into());
    }
    let disk = facts
        .disks
        .iter()
        .find(|d| d.device == "disk" && !d.readonly)
        .and_then(|d| d.path.clone())
        .ok_or_else(|| Error::InvalidOption {
            option: "VM".into(),
            value: vm.into(),
            reason: "it has no writable disk to save".into(),
        })?;
    let image_dir = ctx.config.image_cache(ctx.host).join("templates");
    let toml_dir = ctx.config.state_dir(ctx.host).join("templates");
    for d in [&image_dir, &toml_dir] {
        hostio::file::create_dir_all_mode(d, 0o755).map_err(|source| Error::Io {
            op: "create",
            path: d.clone(),
            source,
        })?;
    }
    let image = image_dir.join(format!("{name}.qcow2"));
    let path = toml_dir.join(format!("{name}.toml"));
    let partial = image_dir.join(format!(".{name}.qcow2.partial"));
    let _ = hostio::file::remove_file(&partial);
    let argv = vec![
        "qemu-img".to_string(),
        "convert".into(),
        "-q".into(),
        "-O".into(),
        "qcow2".into(),
        disk.display().to_string(),
        partial.display().to_string(),
    ];
    let flattened = ctx.runner.run(&Cmd::new(argv)).map_err(|source| {
        let _ = hostio::file::remove_file(&partial);
        TemplateError::Flatten {
            from: disk.clone(),
            to: image.clone(),
            source,
        }
    });
    flattened?;
    let info = guest_media::disk::image_info(ctx.runner, &partial)?;
    let template = Template {
        description: description.map(str::to_string),
        cpus: Some(facts.vcpus),
        memory: Some(format!("{}M", facts.memory_kib / 1024)),
        disk: Some(info.virtual_size.to_string()),
        image: Some(image.display().to_string()),
        release: md.release.clone(),
        firmware: Some(
            if facts.firmware == "efi" {
                "efi"
            } else {
                "bios"
            }
            .into(),
        ),
        domain_type: Some(facts.domain_type.clone()),
        cpu_mode: facts.cpu_mode.clone(),
        user: md.user.clone(),
        kernel: facts.kernel.clone(),
        initrd: facts.initrd.clone(),
        kernel_args: facts.cmdline.clone(),
        saved_from: Some(vm.into()),
        saved_at: Some(crate::build::now_rfc3339()),
        ..Template::default()
    };
    let finish = || -> Result<()> {
        // Read-only: every VM made from it reads it as its backing file.
        std::fs::set_permissions(
            &partial,
            std::os::unix::fs::PermissionsExt::from_mode(0o444),
        )
        .map_err(|source| Error::Io {
            op: "chmod",
            path: partial.clone(),
            source,
        })?;
        hostio::file::write_atomic(&path, templates::to_toml(&template).as_bytes(), 0o644)
            .map_err(|source| Error::Io {
                op: "write",
                path: path.clone(),
                source,
            })?;
        std::fs::rename(&partial, &image).map_err(|source| {
            let _ = hostio::file::remove_file(&path);
            Error::Io {
                op: "rename",
                path: partial.clone(),
                source,
            }
        })
    };
    if let Err(e) = finish() {
        let _ = hostio::file::remove_file(&partial);
        return Err(e);
    }
    Ok(Saved {
        name: name.into(),
        path,
        bytes: std::fs::metadata(&image).map(|m| m.len()).unwrap_or(0),
        image,
        template,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// What `template delete` removed.
#[derive(Debug, Clone, Serialize)]
pub struct Deleted {
    pub name: String,
    pub removed: Vec<PathBuf>,
}

/// Removes a saved template and its image; refused for the admin's, and while a VM's base
/// image is the template's image.
pub fn delete(ctx: &Ctx, name: &str, yes: bool) -> Result<Deleted> {
    let found = templates::load(ctx, name)?;
    if found.origin == Origin::System {
        return Err(TemplateError::System {
            name: name.into(),
            path: found.path,
        }
        .into());
    }
    let image = found.template.image.clone();
    let vms = users(ctx, image.as_deref())?;
    if !vms.is_empty() {
        return Err(TemplateError::InUse {
            name: name.into(),
            image: image.map(PathBuf::from).unwrap_or_default(),
            vms,
        }
        .into());
    }
    if !yes {
        return Err(TemplateError::NotConfirmed { name: name.into() }.into());
    }
    let mut removed = Vec::new();
    // Only an image in the cache's templates/ directory is the template's own.
    let own_dir = ctx.config.image_cache(ctx.host).join("templates");
    for p in image
        .map(PathBuf::from)
        .filter(|p| p.parent() == Some(own_dir.as_path()))
        .into_iter()
        .chain([found.path.clone()])
    {
        match hostio::file::remove_file(&p) {
            Ok(true) => removed.push(p),
            Ok(false) => {}
            Err(source) => {
                return Err(Error::Io {
                    op: "remove",
                    path: p,
                    source,
                });
            }
        }
    }
    Ok(Deleted {
        name: name.into(),
        removed,
    })
}
