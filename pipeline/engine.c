/* placeholder: being written */
extern int pm_placeholder_;
