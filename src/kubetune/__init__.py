"""kubetune: fine-tuning of pretrained Hugging Face models as containerized batch jobs on Kubernetes.

Two sides that never import each other, the launcher (`cli`, `launch`) and the workload that runs in
the pod (`workload`), agree through `contract` and meet in the store (`storage`, `registry`);
`figures` draws what both show. docs/architecture.md is the map."""
