//! Pipelines and pipeline versions in the sled backend: their records (`I`, `V`), unique names
//! (`K` per namespace, `O` per pipeline), creation-ordered indexes (`W` per namespace, `U` per
//! pipeline) and counters, all changed with their record in the write's one batch.

use super::catalog::{CatalogRecord, GROUP, decode};
use super::keys;
use super::txn::{Txn, conflict};
use super::{Inner, KeyRead, KeyWrite, codec};
use crate::api::{Pipeline, PipelineVersion};
use crate::error::{Error, Result};
use crate::query::{ListQuery, Page, Scope};
use crate::store::{Revision, Stored};

impl CatalogRecord for Pipeline {
    const PREFIX: u8 = keys::PIPELINE;
}

impl CatalogRecord for PipelineVersion {
    const PREFIX: u8 = keys::PIPELINE_VERSION;
}

/// `prefix str(part) name`: a unique-name entry.
fn name_key(prefix: u8, part: &str, name: &str) -> Vec<u8> {
    let mut key = keys::scope_prefix(prefix, Some(part));
    key.extend_from_slice(name.as_bytes());
    key
}

pub(super) fn pipeline_name_key(namespace: &str, name: &str) -> Vec<u8> {
    name_key(keys::PIPELINE_NAME, namespace, name)
}

pub(super) fn version_name_key(pipeline_id: &str, name: &str) -> Vec<u8> {
    name_key(keys::PIPELINE_VERSION_NAME, pipeline_id, name)
}

/// The creation-ordered index of a namespace's pipelines.
pub(super) fn pipelines_prefix(namespace: &str) -> Vec<u8> {
    keys::scope_prefix(keys::PIPELINES_BY_NAMESPACE, Some(namespace))
}

/// The creation-ordered index of a pipeline's versions.
pub(super) fn versions_prefix(pipeline_id: &str) -> Vec<u8> {
    keys::scope_prefix(keys::VERSIONS_BY_PIPELINE, Some(pipeline_id))
}

pub(super) fn pipelines_counter(namespace: &str) -> Vec<u8> {
    keys::counter(b'w', Some(namespace))
}

pub(super) fn versions_counter(pipeline_id: &str) -> Vec<u8> {
    keys::counter(b'u', Some(pipeline_id))
}

/// The derived entries of a pipeline: its name entry (→ id), its index entry.
pub(super) fn pipeline_entries(p: &Pipeline) -> (Vec<u8>, Vec<u8>) {
    (
        pipeline_name_key(&p.namespace, &p.name),
        keys::scope_entry(
            &pipelines_prefix(&p.namespace),
            &p.created_at.unwrap_or_default(),
            &p.pipeline_id,
        ),
    )
}

/// The derived entries of a version: its name entry (→ id), its index entry.
pub(super) fn version_entries(v: &PipelineVersion) -> (Vec<u8>, Vec<u8>) {
    (
        version_name_key(&v.pipeline_id, &v.name),
        keys::scope_entry(
            &versions_prefix(&v.pipeline_id),
            &v.created_at.unwrap_or_default(),
            &v.pipeline_version_id,
        ),
    )
}

impl Inner {
    pub(super) fn pipeline_named(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Stored<Pipeline>>> {
        self.named_record(&pipeline_name_key(namespace, name))
    }

    pub(super) fn pipeline_version_named(
        &self,
        pipeline_id: &str,
        name: &str,
    ) -> Result<Option<Stored<PipelineVersion>>> {
        self.named_record(&version_name_key(pipeline_id, name))
    }

    pub(super) fn latest_pipeline_version(
        &self,
        pipeline_id: &str,
    ) -> Result<Option<Stored<PipelineVersion>>> {
        self.newest_in(versions_prefix(pipeline_id))
    }

    pub(super) fn list_pipelines(&self, query: &ListQuery) -> Result<Page<Stored<Pipeline>>> {
        let Scope::Namespace(namespace) = &query.scope else {
            return Err(Error::internal(format!(
                "pipelines are listed by namespace, not {:?}",
                query.scope
            )));
        };
        self.list_catalog(
            pipelines_prefix(namespace),
            pipelines_counter(namespace),
            query,
        )
    }

    pub(super) fn list_pipeline_versions(
        &self,
        query: &ListQuery,
    ) -> Result<Page<Stored<PipelineVersion>>> {
        let Scope::Pipeline(pipeline_id) = &query.scope else {
            return Err(Error::internal(format!(
                "pipeline versions are listed by pipeline, not {:?}",
                query.scope
            )));
        };
        self.list_catalog(
            versions_prefix(pipeline_id),
            versions_counter(pipeline_id),
            query,
        )
    }
}

impl Txn<'_> {
    pub(super) fn put_pipeline(&mut self, new: Pipeline, replaces: Option<Revision>) -> Result<()> {
        let id = new.pipeline_id.clone();
        let key = keys::record(keys::PIPELINE, &id);
        let old = self.expect(&key, replaces.as_ref(), || match &replaces {
            None => format!("a pipeline with id {id:?} exists"),
            Some(_) => format!("pipeline {id:?} changed since it was read"),
        })?;
        let old = old
            .map(|record| decode::<Pipeline>(&id, &record))
            .transpose()?;
        let renamed = old
            .as_ref()
            .is_none_or(|o| o.namespace != new.namespace || o.name != new.name);
        if renamed
            && self
                .get(&pipeline_name_key(&new.namespace, &new.name))?
                .is_some()
        {
            return Err(conflict(format!(
                "a pipeline named {:?} exists in namespace {:?}",
                new.name, new.namespace
            )));
        }
        if let Some(old) = &old {
            self.unindex_pipeline(old);
        }
        self.index_pipeline(&new);
        self.put(key, codec::encode(&new));
        Ok(())
    }

    pub(super) fn delete_pipeline(&mut self, pipeline_id: &str, replaces: &Revision) -> Result<()> {
        let key = keys::record(keys::PIPELINE, pipeline_id);
        let old = self.expect(&key, Some(replaces), || {
            format!("pipeline {pipeline_id:?} changed or was deleted since it was read")
        })?;
        for version_id in self.ids_in(versions_prefix(pipeline_id))? {
            let key = keys::record(keys::PIPELINE_VERSION, &version_id);
            if let Some(record) = self.get(&key)? {
                self.remove_pipeline_version(&version_id, &record)?;
            }
        }
        if let Some(record) = old {
            // A damaged record has no known derived entries: `runledger check` finds them.
            if let Ok(old) = codec::decode::<Pipeline>(&record) {
                self.unindex_pipeline(&old);
            }
            self.remove(key);
        }
        Ok(())
    }

    pub(super) fn put_pipeline_version(
        &mut self,
        new: PipelineVersion,
        replaces: Option<Revision>,
    ) -> Result<()> {
        let id = new.pipeline_version_id.clone();
        let key = keys::record(keys::PIPELINE_VERSION, &id);
        let old = self.expect(&key, replaces.as_ref(), || match &replaces {
            None => format!("a pipeline version with id {id:?} exists"),
            Some(_) => format!("pipeline version {id:?} changed since it was read"),
        })?;
        let old_record = old;
        let old = old_record
            .as_ref()
            .map(|record| decode::<PipelineVersion>(&id, record))
            .transpose()?;
        let renamed = old
            .as_ref()
            .is_none_or(|o| o.pipeline_id != new.pipeline_id || o.name != new.name);
        if renamed
            && self
                .get(&version_name_key(&new.pipeline_id, &new.name))?
                .is_some()
        {
            return Err(conflict(format!(
                "pipeline {:?} has a version named {:?}",
                new.pipeline_id, new.name
            )));
        }
        if let Some(old) = &old {
            self.unindex_pipeline_version(old);
        }
        self.index_pipeline_version(&new);
        self.put_catalog(key, old_record.as_deref(), &new)
    }

    pub(super) fn delete_pipeline_version(
        &mut self,
        version_id: &str,
        replaces: &Revision,
    ) -> Result<()> {
        let key = keys::record(keys::PIPELINE_VERSION, version_id);
        let old = self.expect(&key, Some(replaces), || {
            format!("pipeline version {version_id:?} changed or was deleted since it was read")
        })?;
        if let Some(record) = old {
            self.remove_pipeline_version(version_id, &record)?;
        }
        Ok(())
    }

    fn remove_pipeline_version(&mut self, version_id: &str, record: &[u8]) -> Result<()> {
        // A damaged record has no known derived entries: `runledger check` finds them.
        if let Ok(old) = codec::decode::<PipelineVersion>(record) {
            self.unindex_pipeline_version(&old);
        }
        self.remove_catalog(keys::record(keys::PIPELINE_VERSION, version_id), record)
    }

    fn index_pipeline(&mut self, p: &Pipeline) {
        let (name, entry) = pipeline_entries(p);
        self.put(name, p.pipeline_id.as_bytes().to_vec());
        self.put(entry, Vec::new());
        self.count(pipelines_counter(&p.namespace), GROUP, 1);
    }

    fn unindex_pipeline(&mut self, p: &Pipeline) {
        let (name, entry) = pipeline_entries(p);
        self.remove(name);
        self.remove(entry);
        self.count(pipelines_counter(&p.namespace), GROUP, -1);
    }

    fn index_pipeline_version(&mut self, v: &PipelineVersion) {
        let (name, entry) = version_entries(v);
        self.put(name, v.pipeline_version_id.as_bytes().to_vec());
        self.put(entry, Vec::new());
        self.count(versions_counter(&v.pipeline_id), GROUP, 1);
    }

    fn unindex_pipeline_version(&mut self, v: &PipelineVersion) {
        let (name, entry) = version_entries(v);
        self.remove(name);
        self.remove(entry);
        self.count(versions_counter(&v.pipeline_id), GROUP, -1);
    }
}
