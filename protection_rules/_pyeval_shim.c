/* PyEval_CallObject for durable-rules 2.0.28 on Python 3.13 and later.
 *
 * Python 3.13 removed PyEval_CallObject from the C API. Up to 3.12 it was a macro:
 * PyEval_CallObjectWithKeywords(callable, args, NULL), that is, call `callable` with the
 * positional arguments in the tuple `args` (NULL: no arguments; anything else but a tuple:
 * TypeError "argument list must be a tuple") and no keyword arguments. PyObject_CallObject
 * does exactly that, down to the error message, so the wrapper below only forwards to it.
 *
 * durable-rules' rulespy/rules.c calls PyEval_CallObject in its storage callbacks, so its
 * extension built on 3.13 carries an undefined reference to the symbol and cannot be loaded.
 * protection_rules/network.py loads this module with RTLD_GLOBAL before it imports
 * durable_rules_engine, so the dynamic linker resolves the reference here: the symbol must
 * stay exported (default visibility).
 *
 * setup.py builds it as the top-level module _protection_rules_pyeval_shim, not inside the
 * package, so that a checkout run from its own folder (`python -m pytest` imports the source
 * tree, not the installed package) still finds the one pip built.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

Py_EXPORTED_SYMBOL PyObject *PyEval_CallObject(PyObject *callable, PyObject *args);

PyObject *
PyEval_CallObject(PyObject *callable, PyObject *args)
{
    return PyObject_CallObject(callable, args);
}

static struct PyModuleDef pyeval_shim_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_protection_rules_pyeval_shim",
    .m_doc = "Exports PyEval_CallObject (removed in Python 3.13) for durable-rules.",
    .m_size = 0,
};

PyMODINIT_FUNC
PyInit__protection_rules_pyeval_shim(void)
{
    return PyModuleDef_Init(&pyeval_shim_module);
}
