//! peel-playbook
