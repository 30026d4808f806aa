//! Producer ids for idempotent producers, handed out from blocks the controller allocates, so an
//! id is never handed out twice in the cluster, even across restarts.

use std::sync::Arc;

use sluice_meta::BrokerId;
use sluice_types::ProducerId;

use crate::controller::Controller;
use crate::error::ApiError;
use crate::image::MetadataImage;

pub struct ProducerIds {
    node_id: BrokerId,
    image: Arc<MetadataImage>,
    controller: Arc<Controller>,
    /// The current block: `(next, end)`; a tokio mutex because refilling it awaits the
    /// controller.
    block: tokio::sync::Mutex<(ProducerId, ProducerId)>,
}

impl ProducerIds {
    pub fn new(
        node_id: BrokerId,
        image: Arc<MetadataImage>,
        controller: Arc<Controller>,
    ) -> ProducerIds {
        ProducerIds {
            node_id,
            image,
            controller,
            block: tokio::sync::Mutex::new((ProducerId(0), ProducerId(0))),
        }
    }

    /// A never-used producer id, asking the controller for a new block when this one is spent.
    pub async fn allocate(&self) -> Result<ProducerId, ApiError> {
        let mut ids = self.block.lock().await;
        if ids.0 >= ids.1 {
            *ids = self.controller.allocate_producer_ids(self.node_id).await?;
        }
        let id = ids.0;
        ids.0 = ProducerId(id.get() + 1);
        Ok(id)
    }

    /// Whether `id` was ever handed out by this cluster.
    pub fn is_issued(&self, id: ProducerId) -> bool {
        id >= ProducerId(0) && id < self.image.load().next_producer_id
    }
}
